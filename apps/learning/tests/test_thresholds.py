"""Threshold suggestions: a synthetic company whose true margin threshold is 15% while the rule says 25%."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from apps.audit.models import AuditEntry
from apps.escalations.models import Escalation
from apps.learning.models import LearningSettings, ShadowSample, ThresholdSuggestion
from apps.learning.thresholds import (
    SuggestionError,
    candidate_values,
    leaf_at,
    suggestion_apply,
    suggestions_generate,
    sweep_version,
)
from apps.rules.engine.catalogue import FactType
from apps.rules.engine.ruleset import rule_from_dict
from apps.rules.evaluation.backtest import backtest
from apps.rules.models import Decision, Rule

from .builders import T0, decision, escalation, publish, snapshot

pytestmark = pytest.mark.django_db

SUBJECTS = 2_000
TRUE_THRESHOLD = 15.0
NOISE = 0.03


def rule_when(threshold):
    return {
        "all": [
            {"fact": "project.margin_pct", "op": "lt", "value": threshold},
            {"fact": "project.contract_value", "op": "gte", "value": 100000},
        ]
    }


@pytest.fixture
def costs():
    settings = LearningSettings.load()
    settings.miss_cost = settings.false_alarm_cost = Decimal(1)
    settings.save()
    return settings


@pytest.fixture
def synthetic(costs):
    """2,000 projects with margins uniform in 0–40%; the live rule flags margin < 25% (and contract ≥
    100k, true for all). Flagged projects were labelled ``actioned`` iff margin < 15%, 3% of labels
    flipped. Each project's decision stores its context, as a live evaluation does."""
    rng = random.Random(6)
    version = publish("thin-margin", rule_when(25))
    decisions, escalations, margins = [], [], {}
    for sid in range(1, SUBJECTS + 1):
        margin = round(rng.uniform(0, 40), 4)
        margins[sid] = margin
        matched = margin < 25
        facts = snapshot(project__margin_pct=str(margin), project__contract_value="250000.00")
        decisions.append(decision(version, sid, outcome="matched" if matched else "not_matched", facts=facts))
        if matched:
            truth = margin < TRUE_THRESHOLD
            if rng.random() < NOISE:
                truth = not truth
            escalations.append(
                escalation(version, sid, closed_after=T0 - T0, outcome="actioned" if truth else "false_alarm")
            )
    Decision.objects.bulk_create(decisions)
    Escalation.objects.bulk_create(escalations)
    return Rule.objects.get(key="thin-margin"), margins


def test_suggestion_lands_within_one_point_of_the_true_threshold(synthetic):
    rule, _ = synthetic
    made = suggestions_generate(rule=rule)
    assert len(made) == 1, "only the margin condition can cut the cost (every contract passes the other)"
    suggestion = made[0]
    assert (suggestion.fact, suggestion.op, suggestion.current_value) == ("project.margin_pct", "lt", 25)
    assert abs(float(suggestion.proposed_value) - TRUE_THRESHOLD) <= 1.0
    assert suggestion.proposed["expected_cost"] < suggestion.current["expected_cost"]
    assert suggestion.proposed["precision"] > suggestion.current["precision"]
    assert AuditEntry.objects.filter(
        action="threshold_suggestion.created", object_id=str(suggestion.pk)
    ).exists()


def test_displayed_deltas_match_a_backtest_of_the_suggested_version(synthetic):
    rule, margins = synthetic
    suggestion = suggestions_generate(rule=rule)[0]
    spec = dict(rule.live_version.spec)
    spec["when"] = rule_when(suggestion.proposed_value)
    result = backtest(rule.key, draft=rule_from_dict(spec))
    assert result.replayed == suggestion.replayed == SUBJECTS
    assert result.matches == suggestion.proposed["matches"]
    assert result.live_outcomes["matched"] == suggestion.current["matches"]
    assert (result.precision.positive, result.precision.negative) == (
        suggestion.proposed["positive"],
        suggestion.proposed["negative"],
    )
    assert (result.live_precision.positive, result.live_precision.negative) == (
        suggestion.current["positive"],
        suggestion.current["negative"],
    )
    assert result.newly_matching_count == suggestion.newly_matching
    assert result.no_longer_matching_count == suggestion.no_longer_matching
    # And against the fixture itself: the current version matches every margin under 25.
    assert suggestion.current["matches"] == sum(m < 25 for m in margins.values())
    assert suggestion.proposed["matches"] == sum(
        m < float(suggestion.proposed_value) for m in margins.values()
    )


def test_expensive_misses_move_the_suggestion_up(synthetic, costs):
    rule, _ = synthetic
    balanced = float(suggestions_generate(rule=rule)[0].proposed_value)
    # At 50:1 a flagged project is worth keeping if even 2% of such projects need action; 3% of the
    # labels between 15% and 25% are (flipped) positives, so the cheapest threshold moves back up.
    costs.miss_cost = Decimal(50)
    costs.save()
    cautious = suggestions_generate(rule=rule)
    proposed = float(cautious[0].proposed_value) if cautious else 25.0
    assert proposed > balanced + 5
    # The earlier suggestion was superseded, not left open beside a new one.
    assert ThresholdSuggestion.objects.filter(rule=rule, status="open").count() == len(cautious)
    assert ThresholdSuggestion.objects.filter(rule=rule, status="superseded").count() == 1


def test_shadow_misses_count_against_a_threshold_that_drops_them(costs):
    """Only shadow samples know that projects at 30% margin turned out to need action."""
    version = publish("thin-shadow", rule_when(20))
    decisions, escalations = [], []
    for sid in range(1, 41):  # flagged at 10% margin: half acted on, half false alarms
        decisions.append(
            decision(version, sid, facts=snapshot(project__margin_pct="10", project__contract_value="500000"))
        )
        escalations.append(
            escalation(version, sid, closed_after=T0 - T0, outcome="actioned" if sid % 2 else "false_alarm")
        )
    Decision.objects.bulk_create(decisions)
    Escalation.objects.bulk_create(escalations)
    ShadowSample.objects.bulk_create(
        ShadowSample(
            subject_type="project",
            subject_id=1000 + i,
            sampled_at=T0,
            facts=snapshot(project__margin_pct="30", project__contract_value="500000"),
            weight=5.0,
            positive=True,
        )
        for i in range(4)
    )
    [sweep] = [s for s in sweep_version(version) if s.fact == "project.margin_pct"]
    assert sweep.current.shadow_misses == 20.0  # 4 samples × weight 5, all above 20%
    assert sweep.shadow_rows == 4
    assert float(sweep.best.threshold) > 30  # catching them costs no new false alarm
    assert sweep.best.shadow_misses == 0.0


def test_applying_creates_an_audited_draft_and_publishes_nothing(synthetic, ops_manager):
    rule, _ = synthetic
    suggestion = suggestions_generate(rule=rule)[0]
    live_before = rule.live_version_id
    rule = suggestion_apply(suggestion=suggestion, actor=ops_manager)
    rule.refresh_from_db()
    assert rule.live_version_id == live_before, "a person publishes"
    assert leaf_at(rule.draft["when"], suggestion.path)["value"] == suggestion.proposed_value
    assert rule.draft["when"]["all"][1] == rule.live_version.spec["when"]["all"][1]
    suggestion.refresh_from_db()
    assert (suggestion.status, suggestion.decided_by) == ("applied", ops_manager)
    entry = AuditEntry.objects.get(action="threshold_suggestion.applied")
    assert entry.actor == "user:olivia" and entry.data["from"] == 25 and entry.data["published"] is False
    with pytest.raises(SuggestionError, match="applied"):
        suggestion_apply(suggestion=suggestion, actor=ops_manager)


def test_applying_refuses_when_the_draft_changed_that_condition(synthetic, ops_manager):
    rule, _ = synthetic
    suggestion = suggestions_generate(rule=rule)[0]
    draft = dict(rule.draft)
    draft["when"] = {"all": [{"fact": "project.cost_to_date", "op": "gt", "value": 5}]}
    rule.draft = draft
    rule.save()
    with pytest.raises(SuggestionError):
        suggestion_apply(suggestion=suggestion, actor=ops_manager)
    suggestion.refresh_from_db()
    assert suggestion.status == "open"


def test_candidates_are_rounded_observed_values_and_capped():
    observed = [f"{i / 7:.4f}" for i in range(1000)] + [None, "junk"]
    values = candidate_values(observed, FactType.PERCENT, 25, limit=50)
    assert len(values) <= 51 and Decimal(25) in values
    assert all(v == v.quantize(Decimal("0.1")) for v in values)
    assert values == sorted(values)
    assert candidate_values(["3", "3", "7"], FactType.INT, 5, limit=50) == [3, 5, 7]
