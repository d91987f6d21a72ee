"""When the mail server is back (``mail_return``): the emails an outage held are released at once by one
probe, over a real SMTP server (aiosmtpd) that is stopped and started again."""

from __future__ import annotations

import smtplib
import time
from typing import Any

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from apps.escalations import delivery, mail_return, tasks
from apps.escalations.actions.email import UNREACHABLE
from apps.escalations.models import Delivery

from .helpers import make_escalation
from .test_mail_chunks import _emails, _states

pytestmark = pytest.mark.django_db


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], float]]:
    """The probe tasks queued (args, countdown), recorded instead of sent; the probe's key reset."""
    queued: list[tuple[tuple[Any, ...], float]] = []
    monkeypatch.setattr(
        tasks.probe_mail_server, "apply_async", lambda args, countdown: queued.append((args, countdown))
    )
    mail_return.forget()
    yield queued
    mail_return.forget()


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    handed: list[list[int]] = []
    monkeypatch.setattr(delivery, "deliveries_dispatch", lambda ids: handed.append(sorted(ids)))
    return handed


def _held_by_a_451() -> Delivery:
    """An email the server refused with a 4xx: it waits on its own backoff, not on the server's return."""
    now = timezone.now()
    return Delivery.objects.create(
        escalation=make_escalation(client_name="Refused Ltd"),
        action="email_account_manager",
        target="refused@fulcrum-demo.test",
        idempotency_key="refused:1",
        state=Delivery.State.FAILED,
        attempts=1,
        last_error="SMTP 451: b'try again later'",
        next_attempt_at=now + timezone.timedelta(minutes=5),
        created_at=now,
    )


def test_an_outage_starts_one_probe_and_its_emails_go_as_soon_as_the_server_answers(
    smtp: Any, probes: list[Any], dispatched: list[list[int]], django_capture_on_commit_callbacks: Any
) -> None:
    rows = _emails(4)
    refused = _held_by_a_451()
    smtp.stop()  # connection refused
    assert tasks.deliver_many([r.pk for r in rows[:2]]) == "2 rows: 2 failed"
    assert tasks.deliver_many([r.pk for r in rows[2:]]) == "2 rows: 2 failed"

    failed = Delivery.objects.filter(pk__in=[r.pk for r in rows])
    assert all(r.last_error.startswith(f"{UNREACHABLE}: ConnectionRefusedError") for r in failed)
    [(args, countdown)] = probes  # one probe for the outage, however many chunks met it
    assert countdown == mail_return.PROBE_MIN
    [started] = args

    # Still down: the probe looks again later, and nothing is released.
    assert "unreachable" in tasks.probe_mail_server(started)
    assert len(probes) == 2 and probes[1][1] == mail_return.probe_interval(time.time() - started)
    assert dispatched == [] and all(r.state == "failed" for r in failed)

    smtp.start()
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        said = tasks.probe_mail_server(started)
    assert said.startswith("mail server back") and said.endswith("4 emails released")
    assert dispatched == [sorted(r.pk for r in rows)]  # not the 451's row
    assert all(r.next_attempt_at <= timezone.now() for r in failed.all())
    assert Delivery.objects.get(pk=refused.pk).next_attempt_at > before
    assert len(probes) == 2  # no further probe
    assert mail_return._redis().get(mail_return.KEY) is None  # the next outage starts its own

    assert tasks.deliver_many([r.pk for r in rows]) == "4 rows: 4 delivered"
    assert _states(rows) == [("delivered", 2)] * 4


def test_a_probe_with_nothing_waiting_stops(smtp: Any, probes: list[Any], dispatched: list[Any]) -> None:
    _held_by_a_451()
    smtp.stop()
    assert tasks.probe_mail_server(time.time()) == "no email waits on the mail server"
    assert probes == [] and dispatched == []


def test_a_lost_probe_lets_the_next_failure_start_another(smtp: Any, probes: list[Any]) -> None:
    rows = _emails(2)
    smtp.stop()
    tasks.deliver_many([rows[0].pk])
    assert len(probes) == 1
    mail_return.forget()  # the key lapses: the worker holding the probe's message was killed
    tasks.deliver_many([rows[1].pk])
    assert len(probes) == 2


def test_the_outbox_sweep_starts_a_probe_when_emails_wait_and_none_watches(
    smtp: Any, probes: list[Any]
) -> None:
    # A worker killed while holding the probe's countdown message: its key lapses within a second or two,
    # and the next sweep (beat's, or the one a restarted worker queues at once) starts another.
    [row] = _emails(1)
    smtp.stop()
    tasks.deliver_many([row.pk])
    assert len(probes) == 1
    assert tasks.deliver_due() == "0 due, 0 handed to writeback"  # the probe's key still holds
    mail_return.forget()
    assert tasks.deliver_due() == "0 due, 0 handed to writeback, mail server probe started"
    assert len(probes) == 2
    Delivery.objects.filter(pk=row.pk).update(state=Delivery.State.DELIVERED)
    mail_return.forget()
    assert tasks.deliver_due() == "0 due, 0 handed to writeback"  # nothing waits: no probe
    assert len(probes) == 2


def test_a_broker_that_is_down_costs_the_probe_not_the_chunk(
    smtp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("broker down")  # kombu's: not an OSError

    monkeypatch.setattr(tasks.probe_mail_server, "apply_async", down)
    mail_return.forget()
    [row] = _emails(1)
    smtp.stop()
    assert tasks.deliver_many([row.pk]) == "1 rows: 1 failed"  # recorded; its backoff retries it


def test_a_refused_login_is_the_emails_failure_not_an_outage(
    smtp: Any, probes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.mail.backends.smtp import EmailBackend

    def refuse(self: Any) -> None:
        raise smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials")

    monkeypatch.setattr(EmailBackend, "open", refuse)
    [row] = _emails(1)
    assert tasks.deliver_many([row.pk]) == "1 rows: 1 dead"  # SMTP 535: no retry will mend it
    assert probes == []


@pytest.mark.parametrize(
    ("down_for", "interval"), [(0.0, 0.1), (1.0, 0.1), (4.0, 0.2), (60.0, 3.0), (200.0, 10.0), (3600.0, 10.0)]
)
def test_the_probe_looks_more_rarely_as_an_outage_lasts(down_for: float, interval: float) -> None:
    assert mail_return.probe_interval(down_for) == pytest.approx(interval)
