"""QuickBooks catch-up with Change Data Capture after webhook silence, against the simulator over loopback."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.connectors import tasks as connector_tasks
from apps.connectors.kinds.quickbooks import catchup
from apps.connectors.kinds.quickbooks.catchup import quickbooks_catch_up, silence_before
from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.services import sync_stream
from apps.connectors.webhooks import tasks
from apps.connectors.webhooks.processing import process_delivery
from apps.entities.models import FinancialLine, SourceObject
from apps.simulator import Company, SimulatorServer
from apps.simulator.quickbooks import merge_customers
from apps.simulator.webhooks import change_record, qbo_cloud_delivery, qbo_cloud_event

from .test_admin_actions import _action

VERIFIER = "qbo-verifier-token"


@pytest.fixture
def accounting(connections: dict[str, Connection], rule_calls: list[Any]) -> Connection:
    connection = connections["accounting"]
    connection.webhook_secrets = [VERIFIER]
    connection.save()
    for stream in ("customers", "invoices", "bills"):
        sync_stream(connection=connection, stream=stream)
    return connection


def test_catch_up_applies_what_changed_and_tombstones_what_was_deleted_or_merged(
    accounting: Connection, company: Company, simulator: SimulatorServer
) -> None:
    since = timezone.now() - dt.timedelta(minutes=1)
    invoices = sorted(company.qbo_invoices, key=int)
    change_record(company, "quickbooks", "invoice", invoices[0], balance=0)
    company.delete("quickbooks", "invoice", invoices[1])
    customers = sorted((c.id for c in company.qbo_customers.values() if not c.is_job), key=int)
    merge_customers(company, customers[0], customers[1])

    counts = quickbooks_catch_up(connection=accounting, since=since)

    assert FinancialLine.objects.get(source=accounting, external_id=invoices[0]).balance == Decimal("0.00")
    assert FinancialLine.objects.get(source=accounting, external_id=invoices[1]).deleted_at is not None
    assert SourceObject.objects.get(connection=accounting, external_id=customers[1]).deleted_at is not None
    assert counts["tombstoned"] >= 2 and counts["truncated"] == [] and not counts["lookback_clipped"]
    cdc = [path for _method, path in simulator.requests_log if "/cdc" in path]
    assert len(cdc) == 1  # one call for every entity


def test_a_second_catch_up_over_the_same_window_changes_nothing(
    accounting: Connection, company: Company
) -> None:
    since = timezone.now() - dt.timedelta(minutes=1)
    change_record(company, "quickbooks", "invoice", sorted(company.qbo_invoices, key=int)[0], balance=5)
    first = quickbooks_catch_up(connection=accounting, since=since)
    second = quickbooks_catch_up(connection=accounting, since=since)
    assert first["changed"] >= 1 and second["changed"] == 0


def test_an_entity_cut_at_the_cdc_limit_is_re_read_through_the_query_pager(
    accounting: Connection, company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catchup, "MAX_OBJECTS", 2)
    from apps.simulator import quickbooks as sim

    monkeypatch.setattr(sim, "CDC_MAX_OBJECTS", 2)
    since = timezone.now() - dt.timedelta(minutes=1)
    changed = sorted(company.qbo_invoices, key=int)[:5]
    for invoice in changed:
        change_record(company, "quickbooks", "invoice", invoice, balance=7)

    counts = quickbooks_catch_up(connection=accounting, since=since)

    assert counts["truncated"] == ["Invoice"]
    balances = FinancialLine.objects.filter(source=accounting, external_id__in=changed).values_list(
        "balance", flat=True
    )
    assert set(balances) == {Decimal("0.07")}


def test_a_silence_beyond_thirty_days_is_caught_up_for_thirty_days_and_says_so(
    accounting: Connection,
) -> None:
    counts = quickbooks_catch_up(connection=accounting, since=timezone.now() - dt.timedelta(days=45))
    assert counts["lookback_clipped"]
    assert dt.datetime.fromisoformat(counts["since"]) > timezone.now() - dt.timedelta(days=30)


# ---- what triggers it ------------------------------------------------------------------------------------


def _accepted(connection: Connection, at: dt.datetime, event_id: str) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        connection=connection,
        event_id=event_id,
        received_at=at,
        body=b"[]",
        signature_valid=True,
        status=WebhookDelivery.Status.PROCESSED,
        status_changed_at=at,
    )


def test_only_the_first_delivery_after_a_silence_longer_than_the_retry_window_starts_a_catch_up(
    accounting: Connection,
) -> None:
    now = timezone.now()
    old = _accepted(accounting, now - dt.timedelta(hours=13), "a")
    after_gap = _accepted(accounting, now, "b")
    same_batch = _accepted(accounting, now, "c")
    soon_after = _accepted(accounting, now + dt.timedelta(hours=1), "d")

    assert silence_before(after_gap) == old.received_at
    assert silence_before(same_batch) is None  # events of one batch: only the first row sees the gap
    assert silence_before(soon_after) is None
    assert silence_before(old) is None  # the first delivery ever: nothing to catch up from

    # A connection may name its own window: with 30 minutes, the hour before "d" is a silence too.
    accounting.options = {**accounting.options, "webhook_silence_minutes": 30}
    soon_after.connection = accounting
    assert silence_before(soon_after) == after_gap.received_at


def test_a_delivery_ending_a_silence_queues_a_cdc_catch_up_from_the_silence(
    accounting: Connection,
    company: Company,
    client: HttpClient,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks.catch_up_quickbooks, "apply_async", lambda args, **kw: queued.append(args))
    previous = _accepted(accounting, timezone.now() - dt.timedelta(hours=20), "old")
    invoice = sorted(company.qbo_invoices, key=int)[0]
    headers, body = qbo_cloud_delivery(VERIFIER, [qbo_cloud_event("invoice", invoice)])
    response = client.post(
        "/webhooks/accounting/", data=body, content_type=headers.pop("Content-Type"), headers=headers
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert process_delivery(response.json()["id"]).status == "processed"

    assert queued == [(accounting.pk, (previous.received_at - catchup.MARGIN).isoformat())]


def test_the_catch_up_task_runs_the_catch_up(accounting: Connection, company: Company) -> None:
    invoice = sorted(company.qbo_invoices, key=int)[3]
    change_record(company, "quickbooks", "invoice", invoice, balance=11)
    since = (timezone.now() - dt.timedelta(minutes=1)).isoformat()

    result = tasks.catch_up_quickbooks.run(accounting.pk, since)

    assert result.startswith("quickbooks accounting caught up")
    assert FinancialLine.objects.get(source=accounting, external_id=invoice).balance == Decimal("0.11")


def test_the_simulator_refuses_a_cdc_look_back_past_thirty_days(simulator: SimulatorServer) -> None:
    import requests

    from apps.simulator import REALM_ID

    old = (timezone.now() - dt.timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    answer = requests.get(
        f"{simulator.base_url}/v3/company/{REALM_ID}/cdc",
        params={"entities": "Invoice", "changedSince": old},
        headers={"Authorization": "Bearer sim-qbo-token"},
        timeout=5,
    )
    assert answer.status_code == 400 and answer.json()["Fault"]["Error"][0]["Detail"]


# ---- scheduled and manual catch-ups -------------------------------------------------------------------


@pytest.fixture
def run_catch_ups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Queued catch-ups run at once in this process (their arguments kept), over loopback to the simulator."""
    ran: list[tuple[Any, ...]] = []

    def delay(*args: Any) -> None:
        ran.append(args)
        connector_tasks.catch_up_connection_task.run(*args)

    monkeypatch.setattr(connector_tasks.catch_up_connection_task, "delay", delay)
    return ran


def test_the_scheduled_check_catches_up_while_webhooks_stay_silent(
    accounting: Connection, company: Company, simulator: SimulatorServer, run_catch_ups: list[Any]
) -> None:
    last = _accepted(accounting, timezone.now() - dt.timedelta(hours=13), "before-the-outage")
    invoice = sorted(company.qbo_invoices, key=int)[5]
    change_record(company, "quickbooks", "invoice", invoice, balance=42)  # its webhook never arrives
    simulator.requests_log.clear()

    assert connector_tasks.catch_up_silent_connections.run() == "queued 1 catch-up(s)"

    assert run_catch_ups == [(accounting.pk, (last.received_at - catchup.MARGIN).isoformat())]
    assert FinancialLine.objects.get(source=accounting, external_id=invoice).balance == Decimal("0.42")
    assert [p for _m, p in simulator.requests_log if "/cdc" in p]  # read through CDC, over loopback
    assert AuditEntry.objects.filter(action="connection.caught_up", object_id="accounting").count() == 1
    schedule = settings.CELERY_BEAT_SCHEDULE["catch-up-silent-webhooks"]
    assert schedule["task"] == connector_tasks.catch_up_silent_connections.name


def test_the_scheduled_check_leaves_a_connection_with_recent_or_no_webhooks_alone(
    accounting: Connection, run_catch_ups: list[Any]
) -> None:
    assert connector_tasks.catch_up_silent_connections.run() == "queued 0 catch-up(s)"  # none ever came
    _accepted(accounting, timezone.now() - dt.timedelta(hours=2), "recent")
    assert connector_tasks.catch_up_silent_connections.run() == "queued 0 catch-up(s)"
    assert run_catch_ups == []


def test_an_operator_catches_up_with_the_management_command(accounting: Connection, company: Company) -> None:
    invoice = sorted(company.qbo_invoices, key=int)[6]
    change_record(company, "quickbooks", "invoice", invoice, balance=13)
    out = io.StringIO()

    call_command("catch_up", "accounting", "--hours", "1", stdout=out)

    assert FinancialLine.objects.get(source=accounting, external_id=invoice).balance == Decimal("0.13")
    assert out.getvalue().startswith("accounting: caught up since")
    with pytest.raises(CommandError, match="no change feed"):
        call_command("catch_up", "crm")


def test_an_operator_catches_up_from_admin_and_kinds_without_a_feed_are_named(
    accounting: Connection,
    company: Company,
    client: Any,
    administrator: Any,
    run_catch_ups: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    last = _accepted(accounting, timezone.now() - dt.timedelta(hours=15), "before-the-outage")
    invoice = sorted(company.qbo_invoices, key=int)[7]
    change_record(company, "quickbooks", "invoice", invoice, balance=17)
    crm = Connection.objects.get(slug="crm")
    client.force_login(administrator)

    with django_capture_on_commit_callbacks(execute=True):
        page = _action(client, "catch_up", [accounting, crm])

    said = " ".join(str(m) for m in get_messages(page.wsgi_request))
    assert "Catch-up queued for 1 connection(s)" in said and "No change feed to catch up from: crm" in said
    assert run_catch_ups == [
        (accounting.pk, (last.received_at - catchup.MARGIN).isoformat(), f"user:{administrator.username}")
    ]
    assert FinancialLine.objects.get(source=accounting, external_id=invoice).balance == Decimal("0.17")
