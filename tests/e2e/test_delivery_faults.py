"""The outbox under faults, end to end: a real Celery worker on the broker, aiosmtpd, the simulator.

Each escalation is opened the real way (a published rule matches in the worker), and its emails and
upstream notes go out through the outbox. Then something breaks: the SMTP server is down, the CRM's note
endpoint answers 500, a worker is SIGKILLed while a note is in flight. Every email and note still arrives,
and none twice.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections import Counter
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from apps.accounts.demo import demo_connections
from apps.accounts.models import NotificationSettings
from apps.accounts.roles import ACCOUNT_MANAGERS, EXECUTIVES
from apps.connectors.kinds.hubspot import note_token
from apps.connectors.models import Connection, StreamState
from apps.connectors.services import connection_import
from apps.entities.models import SourceObject
from apps.escalations.actions.email import message_id
from apps.escalations.models import Delivery, Escalation
from apps.escalations.tasks import deliver_due
from apps.orchestration.tasks import evaluate_subjects_task
from apps.rules.evaluation.facts import ENTITY_STREAMS
from apps.rules.evaluation.services import rules_import
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    ProjectFactory,
    UserFactory,
)

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EMAILS = ("email_account_manager", "email_executives")


def _rule(actions: list[str]) -> str:
    return f"""
- key: big-co-thin-margin
  name: Big change order on a thin margin
  subject: change_order
  when:
    all:
      - {{fact: change_order.amount, op: gte, value: 50000}}
      - {{fact: project.margin_pct, op: lt, value: 12}}
  route: executive
  severity: high
  priority: 10
  actions: [{", ".join(actions)}]
  cooldown: 7d
  max_fact_age: 24h
"""


def company_with_risky_change_orders(simulator, count: int, actions: list[str]) -> list[int]:
    """``count`` clients (each a real HubSpot company and QuickBooks customer in the simulator), each with
    a project at 9% margin and a 60,000 change order; a rule that matches them. Returns the change orders."""
    executive = UserFactory(username="elena", email="elena.exec@fulcrum-demo.test")
    executive.groups.add(Group.objects.get(name=EXECUTIVES))
    # Executives get a digest by default; these tests count one email per escalation.
    NotificationSettings.objects.create(user=executive, digest_minutes=0)
    maria = UserFactory(username="maria", email="maria.chen@fulcrum-demo.test")
    maria.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    connection_import(data=demo_connections(simulator.base_url), actor="system:test")
    crm, accounting = Connection.objects.get(slug="crm"), Connection.objects.get(slug="accounting")
    synced = timezone.now() - dt.timedelta(minutes=5)
    owner = CrmOwnerFactory(source=crm, email=maria.email, user=maria)
    companies = sorted(simulator.company.hs_companies)[:count]
    customers = sorted(simulator.company.qbo_customers)[:count]
    change_orders = []
    for company_id, customer_id in zip(companies, customers, strict=True):
        client = ClientFactory(source=crm, external_id=str(company_id), owner=owner)
        SourceObject.objects.create(
            connection=accounting,
            object_type="customer",
            external_id=str(customer_id),
            name=client.name,
            client=client,
            source_updated_at=synced,
            content_hash="0" * 32,
            synced_at=synced,
        )
        project = ProjectFactory(client=client)
        FinancialLineFactory(project=project, kind="invoice", amount=Decimal("1000000"))
        FinancialLineFactory(project=project, kind="bill", amount=Decimal("910000"))
        change_orders.append(ChangeOrderFactory(project=project, amount=Decimal("60000")).pk)
    rules_import(text=_rule(actions), actor="system:test")
    return change_orders


def _fresh_streams() -> None:
    # Every fact's input streams synced five minutes ago, so max_fact_age (24h) is met.
    synced = timezone.now() - dt.timedelta(minutes=5)
    for entity, streams in ENTITY_STREAMS.items():
        connection = Connection.objects.get_or_create(
            slug=f"src-{entity}", defaults={"kind": "procore", "base_url": "http://127.0.0.1:9"}
        )[0]
        for stream in streams:
            StreamState.objects.update_or_create(
                connection=connection, stream=stream, defaults={"last_success_at": synced}
            )


def _all_delivered(expected: int) -> bool:
    states = Counter(Delivery.objects.values_list("state", flat=True))
    return states.get(Delivery.State.DELIVERED, 0) == expected and sum(states.values()) == expected


def test_smtp_down_then_back_every_email_arrives_once(simulator, stoppable_smtp, start_worker):
    ids = company_with_risky_change_orders(simulator, 4, [*EMAILS, "note_crm"])
    _fresh_streams()
    start_worker()
    stoppable_smtp.stop()  # connection refused from now on
    evaluate_subjects_task.delay("change_order", ids, "sync")
    wait_for(lambda: Escalation.objects.count() == 4, timeout=30, message="4 escalations")
    emails = Delivery.objects.filter(action__in=EMAILS)
    wait_for(lambda: emails.count() == 8, timeout=15, message="8 email rows")
    # Down for a while: every email has failed at least twice, while the CRM notes went out.
    wait_for(
        lambda: all(d.attempts >= 2 and d.state == "failed" for d in emails.all()),
        timeout=30,
        message="every email retried while SMTP is down",
    )
    assert "SMTP" in emails.first().last_error or "refused" in emails.first().last_error.lower()
    assert stoppable_smtp.mailbox.messages == []
    stoppable_smtp.start()
    wait_for(lambda: _all_delivered(12), timeout=30, message="everything delivered once SMTP is back")
    # Retries already on the broker for these rows find them delivered: nothing more arrives.
    time.sleep(3)
    received = Counter((str(m["Message-ID"]), str(m["To"])) for m in stoppable_smtp.mailbox.messages)
    expected = {(message_id(d), d.target) for d in emails.all()}
    assert set(received) == expected  # none lost
    assert set(received.values()) == {1}  # none twice
    assert len([n for n in simulator.notes if n["system"] == "hubspot"]) == 4


def test_after_an_smtp_outage_the_held_emails_go_at_once_not_on_their_backoff(
    simulator, stoppable_smtp, start_worker
):
    # The shipped backoff: a failed email's first retry is up to 30 s away (full jitter), doubling.
    ids = company_with_risky_change_orders(simulator, 4, list(EMAILS))
    _fresh_streams()
    start_worker({"FULCRUM_ACTION_BACKOFF_BASE": "30", "FULCRUM_ACTION_BACKOFF_CAP": "3600"})
    stoppable_smtp.stop()
    evaluate_subjects_task.delay("change_order", ids, "sync")
    emails = Delivery.objects.filter(action__in=EMAILS)
    wait_for(
        lambda: emails.count() == 8 and all(d.state == "failed" for d in emails.all()),
        timeout=45,
        message="every email failed on the stopped server",
    )
    due = max(emails.values_list("next_attempt_at", flat=True))
    stoppable_smtp.start()
    back = timezone.now()
    wait_for(lambda: _all_delivered(8), timeout=20, interval=0.1, message="every email delivered")
    delivered = max(emails.values_list("delivered_at", flat=True))
    assert (delivered - back).total_seconds() < 3  # the probe noticed the server within a quarter second
    assert due > back + dt.timedelta(seconds=5)  # ... where the rows' own retries would have waited longer
    received = Counter((str(m["Message-ID"]), str(m["To"])) for m in stoppable_smtp.mailbox.messages)
    assert set(received) == {(message_id(d), d.target) for d in emails.all()}
    assert set(received.values()) == {1}


def test_note_endpoint_failing_then_recovering_writes_exactly_one_note(
    simulator, stoppable_smtp, start_worker
):
    [co] = company_with_risky_change_orders(simulator, 1, ["note_crm"])
    _fresh_streams()
    simulator.faults.add("status", path_prefix="/crm/v3/objects/notes", method="POST", status=500, count=3)
    start_worker()
    evaluate_subjects_task.delay("change_order", [co], "sync")
    wait_for(lambda: _all_delivered(1), timeout=90, message="the note delivered after the 500s")
    note = Delivery.objects.get()
    assert note.attempts == 4  # three 500s, then the note
    hubspot = [n for n in simulator.notes if n["system"] == "hubspot"]
    # HubSpot has no idempotency keys: the note carries the outbox row's token in its body instead.
    assert len(hubspot) == 1 and note_token(note.idempotency_key) in hubspot[0]["body"]
    assert Escalation.objects.count() == 1


def test_worker_killed_mid_delivery_escalation_and_note_exist_once(simulator, stoppable_smtp, start_worker):
    [co] = company_with_risky_change_orders(simulator, 1, ["note_accounting"])
    _fresh_streams()
    # QuickBooks holds the note request for 4 s: long enough to kill the worker while it waits.
    simulator.faults.add("delay", path_prefix="/v3/company/", method="POST", seconds=4, count=1)
    first = start_worker()
    evaluate_subjects_task.delay("change_order", [co], "sync")
    wait_for(
        lambda: any(m == "POST" and "/attachable" in p for m, p in list(simulator.requests_log)),
        timeout=30,
        message="the note request in flight",
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("sending", 1)  # claimed by the dead worker
    # The far side finishes the request it got: the note exists although the worker never heard back.
    wait_for(lambda: len(simulator.notes) == 1, timeout=10, message="the upstream note")

    start_worker()

    # Beat's sweeper (run by hand here, every second) picks the row up once the dead worker's claim expires.
    def swept() -> bool:
        deliver_due.delay()
        return Delivery.objects.filter(state="delivered").exists()

    wait_for(swept, timeout=30, interval=1, message="the abandoned row re-sent")
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert Escalation.objects.count() == 1
    assert len(simulator.notes) == 1  # QuickBooks replayed its answer for the repeated requestid
    assert simulator.notes[0]["idempotency_key"] == delivery.idempotency_key[:50]


def test_a_write_back_out_of_rate_budget_does_not_hold_the_email_behind_it(
    simulator, stoppable_smtp, start_worker
):
    """One worker slot, both queues: the CRM note's vendor budget is spent for a minute, and the email
    queued after it still goes out at once, because the note is re-queued for later instead of sleeping."""
    from apps.connectors.kinds import get_kind
    from apps.connectors.ratelimit import RateBudget, redis_client
    from apps.escalations.delivery import deliveries_dispatch
    from apps.escalations.tests.helpers import make_escalation

    connection_import(data=demo_connections(simulator.base_url), actor="system:test")
    crm = Connection.objects.get(slug="crm")
    crm.options = {**crm.options, "rate_budget": {"calls": 1, "seconds": 60}}
    crm.save()
    budget = get_kind(crm).rate_budget()
    assert isinstance(budget, RateBudget)
    redis_client(budget.url).delete(budget.key, budget.hold_key)
    budget()  # the window's only call is spent: the next one may go in about 60 s
    escalation = make_escalation()
    now = timezone.now()
    note, mail = (
        Delivery.objects.create(
            escalation=escalation,
            action=action,
            target=target,
            idempotency_key=f"esc{escalation.pk}:{action}:{target}",
            next_attempt_at=now,
            created_at=now,
        )
        for action, target in (
            ("note_crm", f"{crm.pk}:{sorted(simulator.company.hs_companies)[0]}"),
            ("email_account_manager", "maria.chen@fulcrum-demo.test"),
        )
    )
    start_worker(concurrency=1)

    deliveries_dispatch([note.pk])
    later = now + dt.timedelta(seconds=30)
    wait_for(
        lambda: Delivery.objects.filter(pk=note.pk, state="pending", next_attempt_at__gt=later).exists(),
        timeout=30,
        message="the note deferred to when the budget refills",
    )
    note.refresh_from_db()
    assert note.attempts == 0 and note.last_error == ""  # a deferral is not a failed attempt
    deliveries_dispatch([mail.pk])
    wait_for(lambda: stoppable_smtp.mailbox.messages, timeout=20, message="the email, not held by the note")

    assert [str(m["Message-ID"]) for m in stoppable_smtp.mailbox.messages] == [message_id(mail)]
    assert Delivery.objects.get(pk=mail.pk).state == "delivered"
    assert Delivery.objects.get(pk=note.pk).state == "pending"
    assert [n for n in simulator.notes if n["system"] == "hubspot"] == []
