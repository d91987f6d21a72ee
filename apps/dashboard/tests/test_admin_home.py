"""The operators' admin home: connection health, the outbox, open escalations and the noisiest rules."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.connectors.models import Connection, StreamState, SyncRun
from apps.dashboard.admin_home import admin_home, schedule_interval
from apps.escalations.models import Delivery, Escalation
from apps.escalations.tests.test_pages import XSS, login, make_escalation, make_rule
from apps.quality.models import Finding
from apps.rules.models import Decision, PendingEvaluation


def _panel(body: str, panel_id: str) -> str:
    start = body.index(f'id="{panel_id}"')
    return (
        body[start : body.index('<div class="module', start + 1)]
        if panel_id != "panel-rules"
        else body[start:]
    )


def _delivery(escalation: Escalation, state: str, n: int) -> None:
    now = timezone.now()
    Delivery.objects.bulk_create(
        Delivery(
            escalation=escalation,
            action="email_account_manager",
            target=f"{state}{i}@example.test",
            idempotency_key=f"{escalation.pk}-{state}-{i}",
            state=state,
            next_attempt_at=now,
            created_at=now,
        )
        for i in range(n)
    )


def _connection(slug: str, schedule: str = "*/15 * * * *") -> Connection:
    return Connection.objects.create(
        slug=slug, kind="procore", base_url="http://127.0.0.1:9", schedule=schedule
    )


def _run(connection: Connection, stream: str, status: str, ago: dt.timedelta, error: str = "") -> None:
    at = timezone.now() - ago
    SyncRun.objects.create(
        connection=connection,
        stream=stream,
        status=status,
        started_at=at,
        heartbeat_at=at,
        finished_at=at,
        error=error,
    )


@pytest.fixture
def health_data():
    now = timezone.now()
    fresh, broken, idle = _connection("pm-fresh"), _connection("crm-broken"), _connection("acct-idle")
    StreamState.objects.create(
        connection=fresh, stream="projects", last_success_at=now - dt.timedelta(minutes=5)
    )
    _run(fresh, "projects", "succeeded", dt.timedelta(minutes=5))
    StreamState.objects.create(
        connection=broken, stream="companies", last_success_at=now - dt.timedelta(minutes=10)
    )
    _run(broken, "companies", "succeeded", dt.timedelta(minutes=40))
    _run(broken, "companies", "failed", dt.timedelta(minutes=2), error="401 Unauthorized from HubSpot")
    # 15-minute schedule, last success 2 hours ago: stale (more than 2 × 15 min)
    StreamState.objects.create(
        connection=idle, stream="invoices", last_success_at=now - dt.timedelta(hours=2)
    )
    _connection("csv-never", schedule="")
    escalation = make_escalation(severity="critical")
    make_escalation(severity="high", status=Escalation.Status.ACKNOWLEDGED)
    make_escalation(severity="low", status=Escalation.Status.RESOLVED)
    _delivery(escalation, Delivery.State.DEAD, 3)
    _delivery(escalation, Delivery.State.FAILED, 2)
    _delivery(escalation, Delivery.State.DELIVERED, 4)
    PendingEvaluation.objects.bulk_create(
        PendingEvaluation(subject_type="project", subject_id=pk, trigger="webhook", queued_at=now - ago)
        for pk, ago in ((1, dt.timedelta(minutes=10)), (2, dt.timedelta(seconds=1)))
    )
    noisy, quiet = make_rule(name="Noisy rule"), make_rule(name="Quiet rule")
    old = make_rule(name="Last month's rule")
    decisions = []
    for version, count, ago in (
        (noisy, 6, dt.timedelta(days=1)),
        (quiet, 2, dt.timedelta(days=3)),
        (old, 9, dt.timedelta(days=10)),
    ):
        decisions += [
            Decision(
                rule_version=version,
                subject_type="change_order",
                subject_id=i % 4,
                outcome="matched",
                trigger="sync",
                evaluated_at=now - ago,
            )
            for i in range(count)
        ]
    decisions.append(
        Decision(
            rule_version=quiet,
            subject_type="change_order",
            subject_id=1,
            outcome="not_matched",
            trigger="sync",
            evaluated_at=now,
        )
    )
    Decision.objects.bulk_create(decisions)
    findings = [("orphan", "error"), ("orphan", "warn"), ("orphan", "error"), ("freshness", "warn")]
    Finding.objects.bulk_create(
        Finding(key=f"k{i}", kind=kind, check_name="c", severity=sev, first_seen=now, last_seen=now)
        for i, (kind, sev) in enumerate(findings)
    )
    Finding.objects.create(
        key="gone",
        kind="conflict",
        check_name="c",
        severity="error",
        first_seen=now,
        last_seen=now,
        resolved_at=now,
    )


def test_admin_home_shows_operators_what_needs_them(
    client, ops_manager, health_data, django_assert_max_num_queries, django_assert_num_queries
):
    # The panels are six queries whatever the number of connections, streams or rules; the rest of
    # the page is Django's admin index (sessions, permissions, other apps' singleton checks).
    with django_assert_num_queries(6):
        admin_home()
    login(client, ops_manager)
    with django_assert_max_num_queries(20):
        response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    body = response.content.decode()

    connections = _panel(body, "panel-connections")
    # crm-broken failing; acct-idle stale and every connection that never synced (csv-never, and the
    # entity factories' crm/pm) stale too
    never = Connection.objects.filter(streams__isnull=True).count()
    assert f"1 failing · {1 + never} stale" in connections
    assert connections.count('<strong class="health health-stale">') == 1 + never
    assert "401 Unauthorized from HubSpot" in connections
    rows = {
        slug: connections[connections.index(slug) :].split("</tr>")[0]
        for slug in ("pm-fresh", "crm-broken", "acct-idle", "csv-never")
    }
    assert "health-ok" in rows["pm-fresh"] and "health-failing" in rows["crm-broken"]
    assert "health-stale" in rows["acct-idle"] and "never" in rows["csv-never"]

    quality = _panel(body, "panel-quality")
    orphans = quality[quality.index("Orphan") :].split("</tr>")[0]
    assert orphans.count('<td class="fulcrum-num">') == 2 and ">2</td>" in orphans and ">1</td>" in orphans
    assert "Freshness" in quality and "conflict" not in quality.lower()  # resolved findings are not shown
    assert quality.index("Orphan") < quality.index("Freshness")  # errors first

    outbox = _panel(body, "panel-outbox")
    assert 'state__exact=dead">3</a>' in outbox and 'state__exact=failed">2</a>' in outbox
    # Two subjects waiting for evaluation, the oldest for ten minutes: a stalled flush.
    waiting = outbox[outbox.index("waiting for evaluation") :].split("</div>")[0]
    assert "<dd>2 (oldest queued 10" in waiting
    assert outbox.count('class="health-failing"') == 2  # dead letters and the stalled queue

    escalations = _panel(body, "panel-escalations")
    assert 'status__exact=open">2</a>' in escalations  # open and acknowledged, not the resolved one
    assert (
        "<dt>Critical</dt><dd>1</dd>" in escalations and "<dt>Not acknowledged</dt><dd>1</dd>" in escalations
    )

    rules = _panel(body, "panel-rules")
    assert rules.index("Noisy rule") < rules.index("Quiet rule")
    assert "Last month" not in rules  # outside the 7 days
    assert (
        '<td class="fulcrum-num">6</td>' in rules and '<td class="fulcrum-num">4</td>' in rules
    )  # matches, subjects
    # Django's app list is still there below the panels
    assert 'class="app-escalations module' in body


def test_admin_home_escapes_synced_text(client, administrator):
    _connection("crm")
    connection = Connection.objects.get(slug="crm")
    _run(connection, "companies", "failed", dt.timedelta(minutes=1), error=XSS)
    StreamState.objects.create(connection=connection, stream="companies", last_success_at=None)
    body = login(client, administrator).get(reverse("admin:index")).content.decode()
    assert XSS not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_admin_home_when_nothing_is_set_up(client, administrator):
    body = login(client, administrator).get(reverse("admin:index")).content.decode()
    assert "No connections yet." in body and "No rule matched in the last 7 days." in body
    assert "No open findings." in body


@pytest.mark.parametrize(
    ("cron", "minutes"),
    [("*/15 * * * *", 15), ("0 * * * *", 60), ("0 */6 * * *", 360), ("30 2 * * 1", 24 * 60), ("", 24 * 60)],
)
def test_schedule_interval(cron, minutes):
    assert schedule_interval(cron) == dt.timedelta(minutes=minutes)
