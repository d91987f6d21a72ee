"""Threshold suggestions: a synthetic company whose true margin threshold is 15% while the rule says 25%."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from apps.audit.models import AuditEntry
from apps.escalations.models import Escalation
from apps.learning.cases import Tally
from apps.learning.models import LearningSettings, ShadowSample, ThresholdSuggestion
from apps.learning.thresholds import (
    SuggestionError,
    candidate_values,
    leaf_at,
    meets_with_margin,
    suggestion_apply,
    suggestions_generate,
    sweep_version,
)
from apps.rules.engine.catalogue import FactType
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


def labelled(version, sid, margin, acted, *, contract="250000"):
    """An escalation of the margin rule opened ``sid`` hours after T0 on these facts and closed a day later,
    acted on or a false alarm."""
    return escalation(
        version,
        sid,
        opened=T0 + dt.timedelta(hours=sid),
        closed_after=dt.timedelta(days=1),
        outcome="actioned" if acted else "false_alarm",
        facts=snapshot(project__margin_pct=str(margin), project__contract_value=contract),
    )


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
        at = T0 + dt.timedelta(hours=sid)  # one decision an hour: the time split has a past and a later part
        facts = snapshot(project__margin_pct=str(margin), project__contract_value="250000.00")
        decisions.append(
            decision(version, sid, outcome="matched" if matched else "not_matched", facts=facts, at=at)
        )
        if matched:
            truth = margin < TRUE_THRESHOLD
            if rng.random() < NOISE:
                truth = not truth
            escalations.append(
                escalation(
                    version,
                    sid,
                    opened=at,
                    closed_after=dt.timedelta(days=3),
                    outcome="actioned" if truth else "false_alarm",
                    facts=facts,
                )
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


def test_figures_are_counted_on_the_learning_period_of_the_labelled_escalations(synthetic):
    rule, margins = synthetic
    suggestion = suggestions_generate(rule=rule)[0]
    learned_until = dt.datetime.fromisoformat(suggestion.validation["holdout"]["from"])
    learned = Escalation.objects.filter(rule=rule, opened_at__lt=learned_until)
    outcomes = dict(learned.values_list("subject_id", "outcome"))
    proposed = float(suggestion.proposed_value)
    assert suggestion.replayed == len(outcomes) == int(suggestion.validation["learn"]["cases"])
    assert suggestion.current["matches"] == len(outcomes), "every escalation matched the live rule"
    assert suggestion.current["negative"] == sum(o == "false_alarm" for o in outcomes.values())
    assert suggestion.proposed["matches"] == sum(margins[sid] < proposed for sid in outcomes)
    assert suggestion.proposed["positive"] == sum(
        margins[sid] < proposed and o == "actioned" for sid, o in outcomes.items()
    )
    assert suggestion.no_longer_matching == sum(margins[sid] >= proposed for sid in outcomes)
    held = Escalation.objects.filter(rule=rule, opened_at__gte=learned_until)
    assert suggestion.validation["holdout"]["current"]["caught"] == held.filter(outcome="actioned").count()


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
        escalations.append(labelled(version, sid, 10, sid % 2, contract="500000"))
    Decision.objects.bulk_create(decisions)
    Escalation.objects.bulk_create(escalations)
    ShadowSample.objects.bulk_create(
        ShadowSample(
            subject_type="project",
            subject_id=1000 + i,
            sampled_at=T0 - dt.timedelta(days=1),  # in the period the sweep learns from
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


def test_facts_changed_after_the_outcome_never_flip_the_suggestion(synthetic):
    """Every project acted on was fixed afterwards (margin up 12 points, so it no longer matches). A
    reading of the newest context would see the acted-on projects at 12–27% and suggest loosening."""
    rule, margins = synthetic
    version = rule.live_version
    acted = Escalation.objects.filter(rule=rule, outcome="actioned").values_list("subject_id", "closed_at")
    Decision.objects.bulk_create(
        decision(
            version,
            sid,
            outcome="not_matched",
            at=closed + dt.timedelta(days=30),
            facts=snapshot(project__margin_pct=str(margins[sid] + 12), project__contract_value="250000.00"),
        )
        for sid, closed in acted
    )
    [suggestion] = suggestions_generate(rule=rule)
    assert float(suggestion.proposed_value) < 25, "the suggestion tightens, as before the fixes"
    assert abs(float(suggestion.proposed_value) - TRUE_THRESHOLD) <= 1.0
    held = suggestion.validation["holdout"]
    assert held["proposed"]["false_alarm_ratio"] < held["current"]["false_alarm_ratio"]
    assert held["proposed"]["caught"] >= 0.95 * held["current"]["caught"]
    assert suggestion.validation["learn"]["to"] < held["from"], "learned on an earlier period"


def test_a_suggestion_that_fails_on_the_held_out_period_is_not_offered(costs):
    """The first 70% of the time, only projects under 15% needed action; afterwards every project the
    rule flagged did (costs rose). Tightening to 15% looks right on the past and loses 40% of the true
    escalations on the held-out period, so it is not offered."""
    rng = random.Random(7)
    version = publish("thin-drift", rule_when(25))
    escalations = []
    for sid in range(1, 1001):
        margin = round(rng.uniform(0, 25), 2)
        late = sid > 700
        escalations.append(labelled(version, sid, margin, late or margin < TRUE_THRESHOLD))
    Escalation.objects.bulk_create(escalations)
    [sweep] = [s for s in sweep_version(version) if s.fact == "project.margin_pct"]
    assert sweep.cheaper and abs(float(sweep.best.threshold) - TRUE_THRESHOLD) <= 1.0
    assert not sweep.passed and "true escalations" in sweep.reason
    assert sweep.holdout_best.caught < 0.95 * sweep.holdout_current.caught
    assert suggestions_generate(rule=version.rule) == []
    assert not ThresholdSuggestion.objects.filter(rule=version.rule).exists()


def test_no_suggestion_without_enough_held_out_labels(costs):
    costs.min_holdout_labels = 500
    costs.save()
    version = publish("thin-few", rule_when(25))
    Escalation.objects.bulk_create(labelled(version, sid, sid % 25, sid % 25 < 15) for sid in range(1, 400))
    [sweep] = [s for s in sweep_version(version) if s.fact == "project.margin_pct"]
    assert sweep.cheaper and not sweep.passed and "500 are needed" in sweep.reason


def test_with_noisy_labels_a_smaller_move_that_passes_the_held_out_period_is_offered(costs):
    """10% of labels flipped: among the projects the rule flags (margin < 25%), a tenth of the healthy
    ones (15–25%) are labelled as needing action, so the cheapest threshold on the learning period (about
    15%) keeps only ~93% of the *labelled* true escalations and would fail the 95% rule on the held-out
    period every time. The sweep proposes the cheapest move that keeps them with a margin instead: a
    tightening short of 15% that the held-out period accepts, and cuts false alarms.

    Not certain for every sample: replayed outside the database over seeds 0–39, this passes for 39
    (seed 18's held-out period happens to hold 2.5 standard deviations more flipped labels above 20%);
    without the held-out size in the interval, for 34."""
    rng = random.Random(7)
    version = publish("thin-noisy", rule_when(25))
    escalations = []
    for sid in range(1, 3001):
        margin = round(rng.uniform(0, 25), 1)
        truth = margin < TRUE_THRESHOLD
        label = truth if rng.random() >= 0.10 else not truth
        escalations.append(labelled(version, sid, margin, label))
    Escalation.objects.bulk_create(escalations)
    [sweep] = [s for s in sweep_version(version) if s.fact == "project.margin_pct"]
    cheapest = min(sweep.candidates, key=lambda f: f.expected_cost)
    assert abs(float(cheapest.threshold) - TRUE_THRESHOLD) <= 1.0
    assert cheapest.positive < 0.95 * sweep.current.positive, "the optimum alone would drop > 5%"
    assert TRUE_THRESHOLD + 1 < float(sweep.best.threshold) < 25
    assert sweep.offered, sweep.reason
    assert sweep.holdout_best.caught >= 0.95 * sweep.holdout_current.caught
    assert sweep.holdout_best.false_alarm_ratio < sweep.holdout_current.false_alarm_ratio
    [made] = suggestions_generate(rule=version.rule)
    assert made.proposed_value == sweep.best.threshold


def test_the_learning_period_must_keep_95_percent_with_confidence_not_by_luck():
    current = Tally(caught=100, false_alarms=60)
    assert not meets_with_margin(current, Tally(caught=95, false_alarms=10)), "95 of 100 is not sure"
    assert meets_with_margin(Tally(caught=1000, false_alarms=600), Tally(caught=990, false_alarms=100))
    assert not meets_with_margin(current, Tally(caught=100, false_alarms=70)), "ratio must fall"
    assert meets_with_margin(Tally(caught=20, false_alarms=5), Tally(caught=30, false_alarms=5)), (
        "a loosening that keeps every true escalation needs no interval"
    )
