"""A re-fire rewrites the open escalation's row where it lies: a heap-only (HOT) update, no index touched.

A warm run re-fires every open escalation (11,816 of them in ``bench/evaluate.py``): each re-fire writes a
new version of a wide row (two evidence documents). With full pages the new version lands on another
page and each of the table's ten indexes gets a new entry; the table keeps room in its pages instead
(``fillfactor``), so the new version stays on the page and no index is written (about half the UPDATE).
"""

from __future__ import annotations

import random

import pytest
from django.utils import timezone

from apps.escalations.models import Escalation
from apps.escalations.refire import refires_write
from apps.rules.models import Decision, Rule, RuleVersion
from tests.pgstats import updates_in_place

pytestmark = pytest.mark.django_db


def test_refiring_many_wide_escalations_updates_them_in_place():
    now = timezone.now()
    rng = random.Random(7)
    rule = Rule.objects.create(key="wide", name="Wide", subject_type="change_order", draft={})
    version = RuleVersion.objects.create(rule=rule, number=1, spec={}, spec_hash="x", published_at=now)

    def wide() -> dict[str, str]:  # ~1 kB that lz4 cannot shrink much: rows as wide as a real match's
        return {f"fact{i}": f"{rng.getrandbits(256):064x}" for i in range(16)}

    escalations = Escalation.objects.bulk_create(
        Escalation(
            rule=rule,
            rule_version=version,
            subject_type="change_order",
            subject_id=subject_id,
            subject_label=f"CO {subject_id}",
            route="standard",
            severity="high",
            priority=10,
            summary="opened",
            evidence={"facts": wide()},
            opened_evidence={"facts": wide()},
            opened_at=now,
            last_fired_at=now,
        )
        for subject_id in range(60)
    )
    decisions = Decision.objects.bulk_create(
        Decision(
            rule_version=version,
            subject_type="change_order",
            subject_id=escalation.subject_id,
            outcome="matched",
            trigger="manual",
            evaluated_at=now,
            facts=wide(),
            explanation={"explanation": []},
            summary="again",
        )
        for escalation in escalations
    )
    updated, in_place = updates_in_place(Escalation)
    refires_write(list(zip(escalations, decisions, strict=True)), now)
    now_updated, now_in_place = updates_in_place(Escalation)
    assert now_updated - updated == len(escalations)
    # Full pages put none in place (0 of 60); a page whose room a neighbour's new version took may not.
    assert now_in_place - in_place >= 0.9 * len(escalations)
    refreshed = Escalation.objects.get(pk=escalations[0].pk)
    assert refreshed.fire_count == 2 and refreshed.evidence["facts"] == decisions[0].facts


def test_a_refire_points_the_evidence_at_its_decision_and_drops_an_older_copy():
    """The evidence is the last firing decision's, read from it: a re-fire stores no copy of its facts and
    trace, and an escalation that stored one before (it fired before migration 0010) loses it."""
    now = timezone.now()
    rule = Rule.objects.create(key="ref", name="Ref", subject_type="change_order", draft={})
    v1 = RuleVersion.objects.create(rule=rule, number=1, spec={}, spec_hash="a", published_at=now)
    v2 = RuleVersion.objects.create(rule=rule, number=2, spec={}, spec_hash="b", published_at=now)
    copy = {"facts": {"change_order.amount": {"value": "1.00"}}, "explanation": [], "outcome": "matched"}
    escalation = Escalation.objects.create(
        rule=rule, rule_version=v1, subject_type="change_order", subject_id=1, subject_label="CO 1",
        route="executive", severity="high", priority=10, summary="opened", evidence=copy,
        opened_at=now, last_fired_at=now,
    )  # fmt: skip
    assert Escalation.objects.get(pk=escalation.pk).evidence == copy  # an older escalation's copy
    facts = {"change_order.amount": {"value": "60000.00", "unit": "USD"}}
    trace = {"explanation": [{"fact": "change_order.amount", "result": "true"}], "summary": "big"}
    decision = Decision.objects.create(
        rule_version=v2, subject_type="change_order", subject_id=1, outcome="matched", trigger="sync",
        evaluated_at=now, facts=facts, explanation=trace, summary="big",
    )  # fmt: skip

    refires_write([(escalation, decision)], now)

    refreshed = Escalation.objects.select_related("evidence_decision__rule_version").get(pk=escalation.pk)
    assert refreshed.evidence_copy == {} and refreshed.evidence_decision_id == decision.pk
    assert refreshed.evidence == {
        "facts": facts,
        "explanation": trace["explanation"],
        "outcome": "matched",
        "rule_version": 2,
    }
    assert refreshed.summary == "big" and refreshed.fire_count == 2


def test_evidence_whose_decision_was_deleted_by_hand_is_empty_not_an_error():
    """``evidence_decision`` has no database constraint (its writers join the decision they name)."""
    from django.db import connection

    now = timezone.now()
    rule = Rule.objects.create(key="gone", name="Gone", subject_type="change_order", draft={})
    version = RuleVersion.objects.create(rule=rule, number=1, spec={}, spec_hash="g", published_at=now)
    decision = Decision.objects.create(
        rule_version=version, subject_type="change_order", subject_id=1, outcome="matched", trigger="sync",
        evaluated_at=now, facts={}, explanation={}, summary="",
    )  # fmt: skip
    escalation = Escalation.objects.create(
        rule=rule, rule_version=version, subject_type="change_order", subject_id=1, subject_label="CO 1",
        route="standard", severity="low", priority=1, summary="", evidence_decision=decision,
        opened_at=now, last_fired_at=now,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM rules_decision WHERE id = %s", [decision.pk])
    assert Escalation.objects.get(pk=escalation.pk).evidence == {}
    joined = Escalation.objects.select_related("evidence_decision__rule_version").get(pk=escalation.pk)
    assert joined.evidence == {}
