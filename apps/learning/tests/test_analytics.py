"""Rule analytics against figures worked out by hand from a ten-escalation fixture."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.escalations.models import Escalation
from apps.learning.analytics import rule_analytics, rules_fired_together
from apps.rules.models import Decision
from tests.factories import ClientFactory, CrmOwnerFactory

from .builders import T0, decision, escalation, publish

pytestmark = pytest.mark.django_db

H = dt.timedelta(hours=1)
MARGIN = {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 25}]}
RENEWAL = {"all": [{"fact": "client.days_to_renewal", "op": "lte", "value": 60}]}


@pytest.fixture
def fixture():
    """Rule ``thin`` v1: 10 escalations on projects 1–10 (maria owns 1–5, james 6–10; 1–7 executive).

    | # | outcome          | ack | closed |
    |---|------------------|-----|--------|
    | 1 | actioned         | 1h  | 2h     |
    | 2 | approved         | 2h  | 5h     |
    | 3 | rejected         | 3h  | 10h    |
    | 4 | false_alarm      | 4h  | 4h     |
    | 5 | no_action_needed | 5h  | 6h     |
    | 6 | false_alarm      | 10h | 20h    |
    | 7 | duplicate        | —   | 1h     |
    | 8 | auto_resolved    | —   | 30h    |
    | 9 | (open)           | —   | —      |
    |10 | (acknowledged)   | 6h  | —      |
    """
    maria = ClientFactory(owner=CrmOwnerFactory(name="Maria"))
    james = ClientFactory(owner=CrmOwnerFactory(name="James"))
    v1 = publish("thin", MARGIN, route="executive")
    rows = {
        1: ("actioned", 1, 2),
        2: ("approved", 2, 5),
        3: ("rejected", 3, 10),
        4: ("false_alarm", 4, 4),
        5: ("no_action_needed", 5, 6),
        6: ("false_alarm", 10, 20),
        7: ("duplicate", None, 1),
        8: ("auto_resolved", None, 30),
        9: ("", None, None),
        10: ("", 6, None),
    }
    Escalation.objects.bulk_create(
        escalation(
            v1,
            sid,
            outcome=outcome,
            ack_after=None if ack is None else ack * H,
            closed_after=None if closed is None else closed * H,
            route="executive" if sid <= 7 else "standard",
            client=maria if sid <= 5 else james,
        )
        for sid, (outcome, ack, closed) in rows.items()
    )
    # Fires: one match per subject, projects 1 and 2 twice more, 3 once more: 15 fires on 10 subjects.
    repeats = [1, 1, 2, 2, 3]
    decisions = [decision(v1, sid) for sid in range(1, 11)]
    decisions += [decision(v1, sid, at=T0 + (i + 1) * H) for i, sid in enumerate(repeats)]
    decisions += [decision(v1, sid, outcome="not_matched") for sid in (11, 12)]
    v2 = publish("thin", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 20}]})
    decisions += [decision(v2, 1, at=T0 + 10 * H), decision(v2, 1, at=T0 + 11 * H)]
    Decision.objects.bulk_create(decisions)
    # A second rule: on project 1 two hours after ``thin`` (together), on project 2 thirty hours after
    # (outside a 24h window), and on change order 3 (another subject type: not the same subject).
    other = publish("renewal", RENEWAL)
    Escalation.objects.bulk_create(
        [
            escalation(other, 1, opened=T0 + 2 * H),
            escalation(other, 2, opened=T0 + 30 * H),
            escalation(other, 3, opened=T0, subject_type="change_order"),
        ]
    )
    return v1, v2


def by_key(stats):
    return {s.key: s for s in stats}


def test_fires_subjects_and_repeat_ratio(fixture):
    stats = by_key(rule_analytics(rule_key="thin"))
    v1, v2 = stats["thin v1"], stats["thin v2"]
    assert (v1.fires, v1.subjects) == (15, 10)
    assert v1.repeat_ratio == pytest.approx(5 / 15)
    assert (v2.fires, v2.subjects, v2.repeat_ratio) == (2, 1, 0.5)
    assert v2.escalations == 0 and v2.precision is None


def test_precision_and_false_alarm_ratio_on_labelled_outcomes(fixture):
    v1 = by_key(rule_analytics(rule_key="thin"))["thin v1"]
    assert v1.escalations == 10
    # positive: 1, 2, 3; negative: 4, 5, 6; duplicate, auto_resolved and open ones left out.
    assert (v1.positive, v1.negative, v1.labelled, v1.false_alarms) == (3, 3, 6, 2)
    assert v1.precision == 0.5
    assert v1.false_alarm_ratio == pytest.approx(2 / 6)
    assert v1.outcomes == {
        "actioned": 1,
        "approved": 1,
        "rejected": 1,
        "false_alarm": 2,
        "no_action_needed": 1,
        "duplicate": 1,
        "auto_resolved": 1,
    }


def test_time_to_acknowledge_and_resolve_percentiles(fixture):
    v1 = by_key(rule_analytics(rule_key="thin"))["thin v1"]
    # Acknowledged: 1, 2, 3, 4, 5, 6, 10 h → p50 4 h; p90 at rank 5.4: 6 + 0.4 × (10 − 6) = 7.6 h.
    assert v1.acknowledge.n == 7
    assert v1.acknowledge.p50 == pytest.approx(4 * 3600)
    assert v1.acknowledge.p90 == pytest.approx(7.6 * 3600)
    # Closed by a person: 2, 5, 10, 4, 6, 20, 1 h (auto-resolved 30 h left out) → sorted 1 2 4 5 6 10 20:
    # p50 5 h; p90 at rank 5.4: 10 + 0.4 × (20 − 10) = 14 h.
    assert v1.resolve.n == 7
    assert v1.resolve.p50 == pytest.approx(5 * 3600)
    assert v1.resolve.p90 == pytest.approx(14 * 3600)


def test_breakdown_by_route(fixture):
    v1 = by_key(rule_analytics(rule_key="thin"))["thin v1"]
    routes = {b.key: b for b in v1.by_route}
    executive, standard = routes["executive"], routes["standard"]
    assert (executive.escalations, executive.positive, executive.negative, executive.false_alarms) == (
        7,
        3,
        3,
        2,
    )
    # Acknowledged 1 2 3 4 5 10 h: p50 3.5 h; p90 at rank 4.5: 5 + 0.5 × 5 = 7.5 h.
    assert executive.acknowledge.p50 == pytest.approx(3.5 * 3600)
    assert executive.acknowledge.p90 == pytest.approx(7.5 * 3600)
    assert (standard.escalations, standard.labelled, standard.precision) == (3, 0, None)
    assert (standard.acknowledge.n, standard.acknowledge.p50) == (1, pytest.approx(6 * 3600))
    assert (standard.resolve.n, standard.resolve.p50) == (0, None)


def test_breakdown_by_account_manager(fixture):
    v1 = by_key(rule_analytics(rule_key="thin"))["thin v1"]
    managers = {b.label: b for b in v1.by_account_manager}
    maria, james = managers["Maria"], managers["James"]
    assert (maria.escalations, maria.positive, maria.negative, maria.false_alarms) == (5, 3, 2, 1)
    assert maria.precision == pytest.approx(0.6) and maria.false_alarm_ratio == pytest.approx(0.2)
    # Acknowledged 1..5 h: p50 3 h, p90 at rank 3.6: 4.6 h. Resolved 2 4 5 6 10 h: p50 5 h, p90 8.4 h.
    assert maria.acknowledge.p50 == pytest.approx(3 * 3600)
    assert maria.acknowledge.p90 == pytest.approx(4.6 * 3600)
    assert maria.resolve.p50 == pytest.approx(5 * 3600)
    assert maria.resolve.p90 == pytest.approx(8.4 * 3600)
    assert (james.escalations, james.positive, james.negative, james.precision) == (5, 0, 1, 0.0)


def test_rules_that_fire_together(fixture):
    pairs = rules_fired_together(window=dt.timedelta(hours=24))
    # Rule ``thin`` was created first, so it is the pair's first rule (lower id).
    assert [(p.rule_a, p.rule_b, p.pairs, p.subjects) for p in pairs] == [("thin", "renewal", 1, 1)]
    wider = rules_fired_together(window=dt.timedelta(hours=48))
    assert [(p.pairs, p.subjects) for p in wider] == [(2, 2)]


def test_since_filters_fires_and_escalations(fixture):
    later = rule_analytics(rule_key="thin", since=T0 + 30 * 60 * dt.timedelta(seconds=1))
    v1 = by_key(later)["thin v1"]
    assert (v1.fires, v1.escalations) == (5, 0)


def test_analytics_query_count_does_not_grow_with_versions(fixture, django_assert_max_num_queries):
    with django_assert_max_num_queries(7):
        stats = rule_analytics()
    assert {s.key for s in stats} >= {"thin v1", "thin v2", "renewal v1"}


def test_recall_is_estimated_only_when_misses_can_be_seen(fixture):
    from apps.learning.models import ReportedMiss

    v1, _ = fixture
    stats = by_key(rule_analytics(rule_key="thin"))["thin v1"]
    assert stats.recall is None and stats.recall_note.startswith("cannot be estimated")
    ReportedMiss.objects.create(
        subject_type="project", subject_id=50, subject_label="p50", rule=v1.rule, outcome="actioned",
        missed_at=v1.published_at, facts={}, facts_from="none", reported_at=v1.published_at,
    )  # fmt: skip
    stats = by_key(rule_analytics(rule_key="thin"))
    # Three caught (actioned, approved, rejected) and one reported miss while v1 was live.
    assert stats["thin v1"].misses_reported == 1
    assert stats["thin v1"].recall == pytest.approx(3 / 4)
    assert stats["thin v2"].misses_reported == 0
