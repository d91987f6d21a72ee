"""The orchestration map's graph from real PostgreSQL rows: counts per window, edges from rule versions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.connectors.models import Connection, StreamState, SyncRun, WebhookDelivery
from apps.escalations.models import Delivery, Escalation
from apps.orchestration.map import DISABLED, FAILING, IDLE, OK, WARNING, build_map, cached_map, parse_window
from apps.rules.evaluation.services import evaluate_subjects, rule_publish
from apps.rules.models import Decision, EvaluationRun, Rule, RuleVersion
from tests.factories import ChangeOrderFactory, ConnectionFactory, ProjectFactory

from .load import publish_rule

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def ago(**kw: float) -> dt.datetime:
    return NOW - dt.timedelta(**kw)


def sync_run(
    conn: Connection, stream: str, started: dt.datetime, seen: int, status: str = "succeeded"
) -> SyncRun:
    return SyncRun.objects.create(
        connection=conn,
        stream=stream,
        status=status,
        started_at=started,
        heartbeat_at=started,
        finished_at=started + dt.timedelta(seconds=5),
        counts={"seen": seen, "inserted": 1, "updated": 2},
        error="HTTP 503" if status == "failed" else "",
    )


def escalate(version: RuleVersion, subject_id: int, *, opened: dt.datetime, outcome: str = "", closed=None):
    return Escalation.objects.create(
        rule=version.rule,
        rule_version=version,
        subject_type=version.rule.subject_type,
        subject_id=subject_id,
        subject_label=f"subject {subject_id}",
        route="standard",
        severity="high",
        priority=10,
        status="resolved" if outcome else "open",
        outcome=outcome,
        summary="s",
        evidence={},
        opened_at=opened,
        last_fired_at=opened,
        closed_at=closed,
    )


def deliver(escalation: Escalation, action: str, state: str, created: dt.datetime) -> Delivery:
    return Delivery.objects.create(
        escalation=escalation,
        action=action,
        target="t",
        idempotency_key=f"{escalation.pk}:{action}:{state}:{created.timestamp()}",
        state=state,
        next_attempt_at=created,
        created_at=created,
    )


def decide(version: RuleVersion, outcome: str, at: dt.datetime, subject_id: int = 1) -> Decision:
    return Decision.objects.create(
        rule_version=version,
        subject_type=version.rule.subject_type,
        subject_id=subject_id,
        outcome=outcome,
        trigger="sync",
        evaluated_at=at,
    )


@pytest.fixture
def pm():
    conn = ConnectionFactory(slug="pm", kind="procore", schedule="*/15 * * * *", options={"company_id": 1})
    StreamState.objects.create(connection=conn, stream="change_orders", last_success_at=ago(minutes=5))
    StreamState.objects.create(connection=conn, stream="milestones", last_success_at=ago(hours=3))
    return conn


@pytest.fixture
def books():
    conn = ConnectionFactory(
        slug="books", kind="quickbooks", schedule="*/15 * * * *", options={"realm_id": "1"}
    )
    StreamState.objects.create(connection=conn, stream="invoices", last_success_at=ago(minutes=2))
    return conn


def test_parse_window_accepts_the_three_windows_and_defaults_to_a_day():
    assert [parse_window(w) for w in ("1h", "24h", "7d", None, "")] == ["1h", "24h", "7d", "24h", "24h"]
    assert parse_window("30d") is None and parse_window("1H") is None


def test_records_synced_per_stream_count_only_runs_in_the_window(pm):
    sync_run(pm, "change_orders", ago(minutes=20), 10)
    sync_run(pm, "change_orders", ago(hours=5), 100)
    sync_run(pm, "change_orders", ago(days=3), 1000)
    sync_run(pm, "change_orders", ago(days=9), 10000)
    per_window = {}
    for window in ("1h", "24h", "7d"):
        graph = build_map(window, now=NOW)
        per_window[window] = graph.by_id[f"stream:{pm.pk}:change_orders"].counts["records"]
        assert graph.by_id[f"system:{pm.pk}"].counts["records"] == per_window[window]
    assert per_window == {"1h": 10, "24h": 110, "7d": 1110}
    edge = next(e for e in build_map("24h", now=NOW).edges if e.target == f"stream:{pm.pk}:change_orders")
    assert (edge.source, edge.count) == (f"system:{pm.pk}", 110)


def test_stream_lag_and_health_in_words(pm):
    sync_run(pm, "change_orders", ago(minutes=6), 3)
    graph = build_map("1h", now=NOW)
    fresh = graph.by_id[f"stream:{pm.pk}:change_orders"]
    stale = graph.by_id[f"stream:{pm.pk}:milestones"]
    assert fresh.counts["lag_seconds"] == 300.0 and fresh.health == OK
    assert "5 min ago" in fresh.health_text
    # Every 15 minutes: stale after 30 minutes without a success.
    assert stale.health == WARNING and stale.health_text.startswith("Stale")
    system = graph.by_id[f"system:{pm.pk}"]
    assert system.health == WARNING and system.health_text == "Stale: 1 of 2 streams"

    sync_run(pm, "change_orders", ago(minutes=1), 0, status="failed")
    graph = build_map("1h", now=NOW)
    failing = graph.by_id[f"stream:{pm.pk}:change_orders"]
    assert failing.health == FAILING and "failed" in failing.health_text and "HTTP 503" in failing.health_text
    assert failing.counts["failed_runs"] == 1 and failing.counts["runs"] == 2
    assert graph.by_id[f"system:{pm.pk}"].health == FAILING

    Connection.objects.filter(pk=pm.pk).update(enabled=False)
    graph = build_map("1h", now=NOW)
    assert graph.by_id[f"system:{pm.pk}"].health == DISABLED


def test_webhooks_received_in_the_window_are_counted_per_system(pm):
    for i, when in enumerate((ago(minutes=3), ago(hours=2), ago(days=2))):
        WebhookDelivery.objects.create(
            connection=pm, event_id=f"e{i}", received_at=when, status_changed_at=when, body=b"{}"
        )
    counts = [build_map(w, now=NOW).by_id[f"system:{pm.pk}"].counts["webhooks"] for w in ("1h", "24h", "7d")]
    assert counts == [1, 2, 3]


def test_edges_follow_the_published_versions_conditions_and_actions(pm, books):
    version = publish_rule(
        "co-exec-review",
        "Change order needs executive judgment",
        "change_order",
        ["change_order.amount", "project.margin_pct"],
        ["email_executives", "flag_dashboard"],
    )
    Rule.objects.create(key="draft-only", name="Never published", subject_type="project", draft={})
    graph = build_map("24h", now=NOW)
    edges = {(e.source, e.target) for e in graph.edges}
    rule = "rule:co-exec-review"
    assert {("fact:change_order.amount", rule), ("fact:project.margin_pct", rule)} <= edges
    assert {e for e in edges if e[1] == rule} == {
        ("fact:change_order.amount", rule),
        ("fact:project.margin_pct", rule),
    }
    # Which streams feed those facts: the stream loading each fact's input entities.
    assert (f"stream:{pm.pk}:change_orders", "fact:change_order.amount") in edges
    assert (f"stream:{books.pk}:invoices", "fact:project.margin_pct") in edges
    assert (f"stream:{pm.pk}:milestones", "fact:change_order.amount") not in edges
    assert {e for e in edges if e[0] == rule} == {
        (rule, "action:email_executives"),
        (rule, "action:flag_dashboard"),
    }
    assert "rule:draft-only" not in graph.by_id
    assert graph.by_id["fact:change_order.amount"].counts["rules"] == 1
    assert graph.by_id["fact:client.days_to_renewal"].health == IDLE

    # A new published version reading another fact moves the edges with it.
    rule_row = version.rule
    rule_row.draft = {
        **version.spec,
        "when": {"all": [{"fact": "client.days_to_renewal", "op": "lte", "value": 60}]},
        "actions": ["note_crm"],
    }
    rule_row.save()
    rule_publish(rule=rule_row, actor="test", evaluate=False)
    graph = build_map("24h", now=NOW)
    edges = {(e.source, e.target) for e in graph.edges}
    assert {e for e in edges if e[1] == rule} == {("fact:client.days_to_renewal", rule)}
    assert {e for e in edges if e[0] == rule} == {(rule, "action:note_crm")}
    assert graph.by_id[rule].detail == "co-exec-review v2"


def test_evaluations_count_single_decisions_and_bulk_runs_once(pm):
    version = publish_rule("margin", "Margin low", "project", ["project.margin_pct"], ["flag_dashboard"])
    decide(version, "matched", ago(minutes=10))
    decide(version, "not_matched", ago(hours=3))
    decide(version, "insufficient_data", ago(days=2))
    decide(version, "matched", ago(days=8))  # outside every window
    # A bulk run at 12:00-6h: 3 subjects; the one it traced has a decision at the run's time.
    run_at = ago(hours=6)
    EvaluationRun.objects.create(
        subject_type="project",
        trigger="schedule",
        evaluated_at=run_at,
        subjects=3,
        outcomes=[
            {"rule": "margin", "version": 1, "rule_version_id": version.pk, "matched": 1, "not_matched": 2,
             "insufficient_data": 0, "decisions": 1},
        ],
    )  # fmt: skip
    decide(version, "matched", run_at, subject_id=2)
    counts = {w: build_map(w, now=NOW).by_id["rule:margin"].counts for w in ("1h", "24h", "7d")}
    assert [counts[w]["evaluations"] for w in ("1h", "24h", "7d")] == [1, 5, 6]
    assert [counts[w]["matched"] for w in ("1h", "24h", "7d")] == [1, 2, 2]
    assert counts["24h"]["not_matched"] == 3 and counts["7d"]["insufficient_data"] == 1
    graph = build_map("7d", now=NOW)
    assert graph.by_id["rule:margin"].health == WARNING  # insufficient data in the window
    assert build_map("1h", now=NOW).by_id["rule:margin"].health == OK


def test_evaluations_match_what_the_evaluator_reports(pm):
    """Through the real evaluation: one subject on its own, then a bulk run over all of them."""
    project = ProjectFactory()
    cos = [ChangeOrderFactory(project=project, amount=Decimal(a)) for a in ("60000", "70000", "100")]
    rule = Rule.objects.create(
        key="big-co",
        name="Big change order",
        subject_type="change_order",
        draft={
            "key": "big-co",
            "name": "Big change order",
            "subject": "change_order",
            "when": {"all": [{"fact": "change_order.amount", "op": "gte", "value": 50000}]},
            "actions": ["flag_dashboard"],
        },
    )
    rule_publish(rule=rule, actor="test", evaluate=False)
    single = evaluate_subjects(subject_type="change_order", ids=[cos[0].pk], trigger="manual")
    bulk = evaluate_subjects(subject_type="change_order", ids=None, trigger="schedule")
    counts = build_map("1h").by_id["rule:big-co"].counts
    expected = single.outcomes + bulk.outcomes
    assert counts["evaluations"] == sum(expected.values()) == 4
    for outcome in ("matched", "not_matched", "insufficient_data"):
        assert counts[outcome] == expected.get(outcome, 0), outcome


def test_deliveries_and_outcomes_per_window(pm):
    version = publish_rule(
        "co", "CO", "change_order", ["change_order.amount"], ["email_account_manager", "note_crm"]
    )
    recent = escalate(version, 1, opened=ago(minutes=30), outcome="false_alarm", closed=ago(minutes=5))
    older = escalate(version, 2, opened=ago(hours=30), outcome="actioned", closed=ago(hours=20))
    still_open = escalate(version, 3, opened=ago(hours=2))
    deliver(recent, "email_account_manager", "delivered", ago(minutes=29))
    deliver(recent, "note_crm", "dead", ago(minutes=29))
    deliver(older, "email_account_manager", "delivered", ago(hours=30))
    deliver(older, "note_crm", "failed", ago(hours=30))
    deliver(still_open, "email_account_manager", "pending", ago(hours=2))
    deliver(still_open, "digest", "delivered", ago(hours=2))  # not in the version: traffic only

    one_hour = build_map("1h", now=NOW)
    email = one_hour.by_id["action:email_account_manager"]
    note = one_hour.by_id["action:note_crm"]
    assert (email.counts["sent"], email.counts["waiting"]) == (1, 0)
    assert (note.counts["dead"], note.health) == (1, FAILING)
    assert one_hour.by_id["outcome:false_alarm"].counts["escalations"] == 1
    assert one_hour.by_id["outcome:actioned"].counts["escalations"] == 0
    edges = {(e.source, e.target): e for e in one_hour.edges}
    assert edges[("action:note_crm", "outcome:false_alarm")].count == 1
    assert edges[("action:email_account_manager", "outcome:false_alarm")].count == 1
    assert ("action:note_crm", "outcome:actioned") not in edges
    assert edges[("rule:co", "action:note_crm")].count == 1
    assert "action:digest" not in one_hour.by_id

    week = build_map("7d", now=NOW)
    email = week.by_id["action:email_account_manager"]
    assert (email.counts["sent"], email.counts["waiting"]) == (2, 1)
    assert week.by_id["action:note_crm"].counts == {
        "sent": 0,
        "failed": 1,
        "dead": 1,
        "waiting": 0,
        "rules": 1,
    }
    assert week.by_id["outcome:actioned"].counts["escalations"] == 1
    edges = {(e.source, e.target): e for e in week.edges}
    assert edges[("rule:co", "action:email_account_manager")].count == 3
    assert edges[("rule:co", "action:digest")].configured is False
    assert edges[("action:note_crm", "outcome:actioned")].count == 1
    rule = week.by_id["rule:co"].counts
    assert (rule["escalations_opened"], rule["escalations_closed"]) == (3, 2)
    assert week.totals()["deliveries_dead"] == 1 and week.totals()["outcomes"] == 2


def test_disabled_rule_and_focus_path(pm, books):
    publish_rule("a", "A", "change_order", ["change_order.amount"], ["flag_dashboard"])
    publish_rule("b", "B", "client", ["client.days_to_renewal"], ["note_crm"])
    Rule.objects.filter(key="b").update(enabled=False)
    graph = build_map("24h", now=NOW)
    assert graph.by_id["rule:b"].health == DISABLED
    path = graph.path_through(f"system:{pm.pk}")
    assert {"rule:a", "action:flag_dashboard", f"stream:{pm.pk}:change_orders"} <= path
    assert "rule:b" not in path and f"system:{books.pk}" not in path
    assert graph.path_through("nope") == set()


def test_every_node_links_to_where_it_is_configured(pm):
    publish_rule("a", "A", "change_order", ["change_order.amount"], ["flag_dashboard"])
    graph = build_map("24h", now=NOW)
    links = {n.id: dict(n.links) for n in graph.nodes}
    assert links[f"system:{pm.pk}"]["Connection"] == f"/admin/connectors/connection/{pm.pk}/change/"
    assert links["rule:a"]["Rule"] == f"/admin/rules/rule/{Rule.objects.get(key='a').pk}/change/"
    assert links["rule:a"]["Rule analytics"] == "/admin/learning/ruleanalytics/?rule=a"
    assert (
        links["action:flag_dashboard"]["Outbox"]
        == "/admin/escalations/delivery/?action__exact=flag_dashboard"
    )
    assert (
        links["outcome:false_alarm"]["Escalations"]
        == "/admin/escalations/escalation/?outcome__exact=false_alarm"
    )
    assert "stream__exact=change_orders" in links[f"stream:{pm.pk}:change_orders"]["Sync runs"]


def test_the_cached_map_serves_the_next_clicks_and_is_rebuilt_after_it_expires(pm):
    from django.core.cache import cache

    first = cached_map("24h")
    sync_run(pm, "change_orders", timezone.now() - dt.timedelta(minutes=1), 5)
    assert cached_map("24h") is not None and cached_map("24h").now == first.now
    assert cached_map("1h").window == "1h"  # one entry per window
    cache.delete("orchestration:map:24h")  # what the expiry does
    assert cached_map("24h").by_id[f"stream:{pm.pk}:change_orders"].counts["records"] == 5
