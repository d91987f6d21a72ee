from __future__ import annotations

import datetime as dt
import smtplib

import pytest
from django.core import mail
from django.utils import timezone

from apps.escalations.actions.email import message_id
from apps.escalations.delivery import delivery_attempt, delivery_claim
from apps.escalations.models import Delivery

from .helpers import make_escalation

pytestmark = pytest.mark.django_db


def _delivery(escalation, action="email_account_manager", target="maria@fulcrum-demo.test", **extra):
    now = timezone.now()
    return Delivery.objects.create(
        escalation=escalation,
        action=action,
        target=target,
        idempotency_key=f"k:{action}:{target}",
        next_attempt_at=now,
        created_at=now,
        **extra,
    )


def test_email_is_sent_with_the_explanation_and_link(settings):
    settings.SITE_URL = "https://fulcrum.example"
    escalation = make_escalation(client_name="<script>alert(1)</script> Builders")
    delivery = _delivery(escalation)
    assert delivery_attempt(delivery.pk) == "delivered"
    [message] = mail.outbox
    assert message.to == ["maria@fulcrum-demo.test"]
    assert f"https://fulcrum.example/escalations/{escalation.pk}/" in message.body
    assert "- Change order amount $60,000.00 is at least $50,000.00" in message.body
    html = message.alternatives[0][0]
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.attempts == 1 and delivery.delivered_at


def test_an_email_sent_again_after_a_crash_carries_the_same_message_id(monkeypatch):
    """The at-least-once window: the server said 250, the worker died before the row was marked
    delivered. The attempt was recorded before sending; the repeat is recognisably the same message."""
    from apps.escalations import delivery as outbox

    row = _delivery(make_escalation())
    real_finish = outbox._finish_delivered

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("SIGKILL between the 250 and the commit")

    monkeypatch.setattr(outbox, "_finish_delivered", crash)
    with pytest.raises(KeyboardInterrupt):
        delivery_attempt(row.pk)
    row.refresh_from_db()
    assert row.state == "sending" and row.attempts == 1  # recorded before the send
    monkeypatch.setattr(outbox, "_finish_delivered", real_finish)
    assert delivery_attempt(row.pk) == "not-due"  # its claim still holds
    Delivery.objects.filter(pk=row.pk).update(claimed_until=timezone.now() - dt.timedelta(seconds=1))

    assert delivery_attempt(row.pk) == "delivered"

    first, second = mail.outbox
    assert first.extra_headers["Message-ID"] == second.extra_headers["Message-ID"] == message_id(row)
    row.refresh_from_db()
    assert row.attempts == 2


def test_a_delivered_row_is_never_sent_again():
    delivery = _delivery(make_escalation())
    delivery_attempt(delivery.pk)
    assert delivery_attempt(delivery.pk) == "not-due"
    assert len(mail.outbox) == 1


def test_smtp_down_is_retried_later_then_delivered(monkeypatch):
    delivery = _delivery(make_escalation())

    def down(*args, **kwargs):
        raise smtplib.SMTPServerDisconnected("connection refused")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", down)
    assert delivery_attempt(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.next_attempt_at > timezone.now() and "SMTP" in delivery.last_error
    assert delivery_attempt(delivery.pk) == "not-due"  # backing off
    monkeypatch.undo()
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert delivery_attempt(delivery.pk) == "delivered"
    assert len(mail.outbox) == 1


def test_too_many_failures_make_the_row_dead(monkeypatch, settings):
    settings.FULCRUM = {**settings.FULCRUM, "ACTION_MAX_ATTEMPTS": 2}
    delivery = _delivery(make_escalation())
    monkeypatch.setattr(
        "django.core.mail.EmailMessage.send", lambda *a, **k: (_ for _ in ()).throw(OSError("down"))
    )
    assert delivery_attempt(delivery.pk) == "failed"
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert delivery_attempt(delivery.pk) == "dead"
    delivery.refresh_from_db()
    assert "gave up after 2 attempts" in delivery.last_error


def test_a_refused_recipient_is_dead_at_once(monkeypatch):
    delivery = _delivery(make_escalation())

    def refused(*args, **kwargs):
        raise smtplib.SMTPRecipientsRefused({"maria@fulcrum-demo.test": (550, b"no such user")})

    monkeypatch.setattr("django.core.mail.EmailMessage.send", refused)
    assert delivery_attempt(delivery.pk) == "dead"


def test_a_claim_excludes_other_workers_until_it_expires():
    delivery = _delivery(make_escalation())
    assert delivery_claim(delivery.pk) is not None
    assert delivery_claim(delivery.pk) is None  # another worker
    # The first worker died mid-send: after the claim expires the row is claimable again.
    later = timezone.now() + dt.timedelta(minutes=6)
    reclaimed = delivery_claim(delivery.pk, now=later)
    assert reclaimed is not None and reclaimed.attempts == 2


def test_flag_dashboard_is_recorded_as_delivered():
    delivery = _delivery(make_escalation(), action="flag_dashboard", target="dashboard")
    assert delivery_attempt(delivery.pk) == "delivered"


# ---- retry classification, upstream actions against the simulator, replay ---------------------------


def test_the_outbox_sorts_failures_by_the_one_vocabulary(monkeypatch):
    """``apps.errors``: a Permanent failure (here a connection missing its credential) is dead at once with
    its error; a Transient one is failed and waits at least its retry_after."""
    from apps.connectors.kinds import ConfigurationError
    from apps.errors import Transient
    from apps.escalations import actions

    def misconfigured(delivery):
        raise ConfigurationError("the connection has no API token")

    def busy(delivery):
        raise Transient("SMTP 421: try later", retry_after=600)

    monkeypatch.setattr(actions.get("email_account_manager"), "perform", misconfigured)
    dead = _delivery(make_escalation(), target="a@fulcrum-demo.test")
    assert delivery_attempt(dead.pk) == "dead"
    dead.refresh_from_db()
    assert dead.attempts == 1 and "no API token" in dead.last_error

    monkeypatch.setattr(actions.get("email_account_manager"), "perform", busy)
    later = _delivery(make_escalation(), target="b@fulcrum-demo.test")
    before = timezone.now()
    assert delivery_attempt(later.pk) == "failed"
    later.refresh_from_db()
    assert later.next_attempt_at >= before + dt.timedelta(seconds=600) and "SMTP 421" in later.last_error


def test_a_failed_send_waits_the_action_backoff_doubling_from_its_base(settings, monkeypatch):
    """The outbox's waits are ``apps.errors.backoff`` over ACTION_BACKOFF_BASE/_CAP: the retry after
    attempt n waits up to base × 2^(n-1), capped (the backoff's own bounds: tests/test_errors.py)."""
    from apps.escalations import actions

    backoff = {"ACTION_BACKOFF_BASE": 10.0, "ACTION_BACKOFF_CAP": 300.0, "ACTION_MAX_ATTEMPTS": 50}
    settings.FULCRUM = {**settings.FULCRUM, **backoff}

    def unreachable(delivery):
        raise ConnectionRefusedError("the SMTP server is down")

    monkeypatch.setattr(actions.get("email_account_manager"), "perform", unreachable)
    for attempts, ceiling in ((0, 10.0), (2, 40.0), (29, 300.0)):
        delivery = _delivery(make_escalation(), target=f"r{attempts}@fulcrum-demo.test", attempts=attempts)
        before = timezone.now()
        assert delivery_attempt(delivery.pk) == "failed"
        delivery.refresh_from_db()
        wait = (delivery.next_attempt_at - before).total_seconds()
        assert 0 <= wait <= ceiling + 1, (attempts, wait)


def test_a_temporary_smtp_refusal_is_retried_and_a_permanent_one_is_dead(monkeypatch):
    temporary, permanent = _delivery(make_escalation()), _delivery(make_escalation(), target="x@y.test")

    def answer(code):
        def send(*args, **kwargs):
            raise smtplib.SMTPDataError(code, b"go away")

        return send

    monkeypatch.setattr("django.core.mail.EmailMessage.send", answer(451))
    assert delivery_attempt(temporary.pk) == "failed"
    monkeypatch.setattr("django.core.mail.EmailMessage.send", answer(554))
    assert delivery_attempt(permanent.pk) == "dead"
    permanent.refresh_from_db()
    assert "SMTP 554" in permanent.last_error
    # A digest is an email like the others: the same refusal is as final for it.
    digest = _delivery(make_escalation(), action="digest", target="x@y.test")
    assert delivery_attempt(digest.pk) == "dead"


@pytest.fixture
def simulator():
    from apps.simulator import SimulatorServer, generate_company

    with SimulatorServer(generate_company(seed=42, scale=0.05)).start() as server:
        yield server


@pytest.fixture
def pm(simulator, settings):
    from apps.simulator import PROCORE_COMPANY_ID
    from tests.factories import ConnectionFactory

    settings.FULCRUM = {**settings.FULCRUM, "HTTP_MAX_RETRIES": 0}  # the outbox retries, not the client
    connection = ConnectionFactory(
        slug="pm", kind="procore", base_url=simulator.base_url, options={"company_id": PROCORE_COMPANY_ID}
    )
    connection.base_url = simulator.base_url
    connection.options = {"company_id": PROCORE_COMPANY_ID}
    connection.credentials = {"access_token": "sim-procore-token"}
    connection.save()
    return connection


def _procore_escalation(simulator, pm, **extra):
    from apps.entities.models import ChangeOrder

    co_sim = next(iter(simulator.company.pc_change_orders.values()))
    escalation = make_escalation(**extra)
    project = escalation.project
    project.source, project.external_id = pm, str(co_sim.project_id)
    project.save(update_fields=["source", "external_id"])
    ChangeOrder.objects.filter(pk=escalation.subject_id).update(
        source=pm, external_id=str(co_sim.id), project_ref=str(co_sim.project_id)
    )
    escalation.refresh_from_db()
    return escalation, co_sim


def test_escalate_pm_creates_one_rfi_despite_500s_and_a_lost_answer(simulator, pm):
    from apps.escalations.outbound import pm_targets

    escalation, co_sim = _procore_escalation(simulator, pm)
    [target] = pm_targets(escalation)
    delivery = _delivery(escalation, action="escalate_pm", target=target)
    simulator.faults.add("status", path_prefix="/rest/v1.0/projects/", method="POST", status=500, count=2)
    assert delivery_attempt(delivery.pk) == "failed"
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert delivery_attempt(delivery.pk) == "failed"
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert delivery_attempt(delivery.pk) == "delivered"
    # The worker died after the RFI was created but before recording it: the row is sent again.
    Delivery.objects.filter(pk=delivery.pk).update(state="pending", next_attempt_at=timezone.now())
    assert delivery_attempt(delivery.pk) == "delivered"
    rfis = [n for n in simulator.notes if n.get("kind") == "rfi"]
    assert len(rfis) == 1
    assert rfis[0]["target"] == co_sim.project_id and rfis[0]["idempotency_key"] == delivery.idempotency_key
    delivery.refresh_from_db()
    assert delivery.response["rfi_id"] == str(rfis[0]["id"])


def test_an_approval_is_written_back_to_the_change_order_in_procore(simulator, pm, executive):
    from apps.escalations.delivery import WRITEBACK_ACTION
    from apps.escalations.services import escalation_decide

    escalation, co_sim = _procore_escalation(simulator, pm)
    escalation_decide(escalation=escalation, actor=executive, approve=False, note="too dear")
    writeback = Delivery.objects.get(escalation=escalation, action=WRITEBACK_ACTION)
    assert delivery_attempt(writeback.pk) == "delivered"
    assert simulator.company.pc_change_orders[co_sim.id].status == "rejected"
    writeback.refresh_from_db()
    assert writeback.response == {"change_order": str(co_sim.id), "status": "rejected"}


def test_a_4xx_from_upstream_is_dead_at_once(simulator, pm):
    escalation, co_sim = _procore_escalation(simulator, pm, outcome="approved")
    target = f"{pm.pk}:{co_sim.project_id}:999999999"  # no such change order: 404
    delivery = _delivery(escalation, action="approval_writeback", target=target)
    assert delivery_attempt(delivery.pk) == "dead"
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and "HTTP 404" in delivery.last_error


def test_a_429_from_upstream_waits_its_retry_after(simulator, pm):
    escalation, co_sim = _procore_escalation(simulator, pm)
    delivery = _delivery(escalation, action="escalate_pm", target=f"{pm.pk}:{co_sim.project_id}")
    simulator.faults.add("rate_limit", path_prefix="/rest/", retry_after=900, count=1)
    before = timezone.now()
    assert delivery_attempt(delivery.pk) == "failed"
    delivery.refresh_from_db()
    # Procore announces the reset in whole epoch seconds (X-Rate-Limit-Reset, here 900 s on from the second
    # the 429 was answered in); the row is due after it, not before.
    reset = int(before.timestamp()) + 900
    assert delivery.next_attempt_at.timestamp() > reset


def test_replay_requeues_a_dead_delivery_from_a_fresh_count(
    administrator, django_capture_on_commit_callbacks
):
    from apps.audit.models import AuditEntry
    from apps.escalations.delivery import delivery_replay

    delivery = _delivery(make_escalation(), state="dead", attempts=8, last_error="gave up")
    with django_capture_on_commit_callbacks() as callbacks:
        assert delivery_replay(delivery=delivery, actor=administrator) is True
    assert len(callbacks) == 1  # the send is queued after commit
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("pending", 0)
    assert AuditEntry.objects.filter(action="delivery.replayed", object_id=str(delivery.pk)).exists()
    assert delivery_attempt(delivery.pk) == "delivered"
    assert delivery_replay(delivery=delivery, actor=administrator) is False  # delivered stays delivered
