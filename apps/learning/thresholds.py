"""Threshold suggestions: sweep each numeric condition of a live rule over the labelled cases.

For every ``gt`` / ``gte`` / ``lt`` / ``lte`` condition on a money, percent or integer fact, candidate
thresholds (the distinct observed values of the fact, or quantiles of them when there are more than
``max_candidates``) replace the condition's value, the others held as they are, and the *same
evaluator* replays the candidate over the cases of ``apps.learning.cases``: each labelled escalation
with the facts it was decided on, each reported miss and each settled shadow sample with the facts of
its time. Never a subject's newest context: facts that changed after an outcome do not move a
suggestion (ANCHORS, Audit and learning 6).

The cases are split in time. The sweep learns on the earlier part; expected cost = miss cost × misses
+ false-alarm cost × false alarms (a shadow sample weighs ``weight``). It picks the cheapest candidate
that on the learning part already lowers the false-alarm ratio while keeping ≥ 95% of the labelled
true escalations — that share's one-sided 95% Wilson lower bound over the learning and held-out sample
sizes, not its point value — or, when none does, the cheapest of all. With noisy labels this proposes
a move the rule can pass instead of the unconstrained optimum in one jump; the next sweep goes on from
there. That candidate is then judged on the later, held-out part: it is offered only when there it
lowers the false-alarm ratio while keeping at least 95% of the true escalations the current threshold
catches (SPEC "Outcomes"). A
suggestion shows both periods' figures. Applying one writes the rule's draft; a person publishes it.
Misses (reported or from shadow samples) are positives the current threshold does not catch, which is
what makes a looser threshold cheaper.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final

from django.db import transaction
from django.utils import timezone

from apps.audit.services import Actor, audit_record
from apps.rules.engine.catalogue import FACTS, FactType
from apps.rules.engine.durations import parse_duration
from apps.rules.engine.evaluator import CompiledCondition, Verdict, compile_condition
from apps.rules.engine.ruleset import rule_from_dict
from apps.rules.models import Rule, RuleVersion

from .cases import KEEP_TRUE, SHADOW, Case, Split, Tally, passes_holdout, rule_cases, tally, time_split
from .lessons import wilson
from .models import LearningSettings, ThresholdSuggestion

SWEPT_OPS: Final = ("gt", "gte", "lt", "lte")
SWEPT_TYPES: Final = (FactType.MONEY, FactType.PERCENT, FactType.INT, FactType.SCORE)
# Candidates are rounded to what a person would type: whole dollars, tenths of a percent.
_STEP: Final = {
    FactType.MONEY: Decimal("1"),
    FactType.PERCENT: Decimal("0.1"),
    FactType.INT: Decimal("1"),
    FactType.SCORE: Decimal("0.01"),
}
_STEP_RE = re.compile(r"\.?([a-z_]+)(?:\[(\d+)\])?")


class SuggestionError(ValueError):
    """Why a suggestion cannot be applied (the draft changed under it, it is not open, ...)."""


@dataclass
class Figures:
    """One threshold's figures over the replayed contexts, labels and shadow samples."""

    threshold: Any
    matches: int = 0
    positive: int = 0  # labelled positives matched
    negative: int = 0  # labelled negatives matched (false alarms)
    misses: int = 0  # labelled positives not matched
    shadow_misses: float = 0.0
    shadow_false_alarms: float = 0.0
    expected_cost: float = 0.0

    @property
    def precision(self) -> float | None:
        labelled = self.positive + self.negative
        return self.positive / labelled if labelled else None

    def as_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "matches": self.matches,
            "positive": self.positive,
            "negative": self.negative,
            "precision": self.precision,
            "misses": self.misses,
            "shadow_misses": round(self.shadow_misses, 4),
            "shadow_false_alarms": round(self.shadow_false_alarms, 4),
            "expected_cost": round(self.expected_cost, 4),
        }


@dataclass
class Sweep:
    """The result of sweeping one condition: every candidate's figures, the best, and its validation."""

    path: str
    fact: str
    op: str
    current: Figures
    best: Figures
    candidates: list[Figures]
    newly_matching: int
    no_longer_matching: int
    replayed: int
    shadow_rows: int
    split: Split | None = None
    holdout_current: Tally | None = None
    holdout_best: Tally | None = None
    learn_current: Tally | None = None
    learn_best: Tally | None = None
    passed: bool = False
    reason: str = ""

    @property
    def cheaper(self) -> bool:
        cheaper = self.best.expected_cost < self.current.expected_cost
        return cheaper and self.best.threshold != self.current.threshold

    @property
    def offered(self) -> bool:
        return self.cheaper and self.passed

    def validation(self) -> dict[str, Any]:
        split = self.split
        return {
            "learn": {
                **(split.period("learn") if split else {}),
                "current": self.learn_current.as_json() if self.learn_current else None,
                "proposed": self.learn_best.as_json() if self.learn_best else None,
            },
            "holdout": {
                **(split.period("holdout") if split else {}),
                "current": self.holdout_current.as_json() if self.holdout_current else None,
                "proposed": self.holdout_best.as_json() if self.holdout_best else None,
            },
            "passed": self.passed,
            "reason": self.reason,
        }


# --- the tree --------------------------------------------------------------------------------------------


def _steps(path: str) -> list[str | int]:
    """``when.all[2].not.any[0]`` → ``["all", 2, "not", "any", 0]`` (the leading ``when`` dropped)."""
    rest = path.removeprefix("when")
    out: list[str | int] = []
    for key, index in _STEP_RE.findall(rest):
        out.append(key)
        if index:
            out.append(int(index))
    return out


def leaf_at(tree: dict[str, Any], path: str) -> dict[str, Any]:
    node: Any = tree
    for step in _steps(path):
        node = node[step]
    if not isinstance(node, dict) or "fact" not in node:
        raise SuggestionError(f"{path} is not a condition")
    return node


def with_threshold(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with the condition at ``path`` testing against ``value``."""
    changed = copy.deepcopy(tree)
    leaf_at(changed, path)["value"] = value
    return changed


def _tree_number(value: Decimal) -> Any:
    # The canonical tree's spelling: whole numbers as ints, other decimals as exact strings.
    value = value.normalize()
    return int(value) if value == value.to_integral_value() else format(value, "f")


def sweepable(condition: CompiledCondition) -> list[tuple[str, str, str, Any]]:
    """``(path, fact, op, value)`` of every condition a sweep can move."""
    return [
        (path, fact, op, value)
        for path, fact, op, value in condition.walk()
        if op in SWEPT_OPS and FACTS[fact].type in SWEPT_TYPES
    ]


# --- the data --------------------------------------------------------------------------------------------


def _decimal(raw: object) -> Decimal | None:
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def candidate_values(
    observed: Iterable[object], fact_type: FactType, current: Any, limit: int
) -> list[Decimal]:
    """Distinct observed values rounded to a typeable step; quantiles of them past ``limit``."""
    step = _STEP[fact_type]
    values = sorted(
        {v.quantize(step, rounding=ROUND_HALF_EVEN) for v in map(_decimal, observed) if v is not None}
    )
    if len(values) > limit > 1:
        # Evenly spaced ranks over the sorted distinct values: quantiles that are observed values.
        values = sorted({values[round(i * (len(values) - 1) / (limit - 1))] for i in range(limit)})
    now = _decimal(current)
    if now is not None and now not in values:
        values.append(now)
        values.sort()
    return values


def _flags(condition: CompiledCondition, max_age: dt.timedelta | None, rows: list[Case]) -> Any:
    import numpy as np

    matched = Verdict.MATCHED
    return np.fromiter(
        (condition.matches(r.values, ages=r.ages, max_age=max_age) is matched for r in rows),
        dtype=bool,
        count=len(rows),
    )


def _leaf_true(op: str, values: Any, threshold: float) -> Any:
    # NaN (no value) compares false; such rows match the same way whatever the threshold (see below).
    if op == "lt":
        return values < threshold
    if op == "lte":
        return values <= threshold
    if op == "gt":
        return values > threshold
    return values >= threshold


# One-sided 95%: the share of true escalations a candidate keeps must be ≥ 95% with that confidence.
# Choosing the cheapest candidate whose *observed* share on the learning period is just 95% picks, among
# many candidates, the one the learning sample flatters (the winner's curse), and the held-out period,
# a smaller sample, has its own noise: such a candidate then keeps ~93% there and is refused month after
# month (bench/learning.py at 10% label noise).
KEEP_CONFIDENCE_Z: Final = 1.645


def meets_with_margin(current: Tally, proposed: Tally, *, holdout_positives: float = 0.0) -> bool:
    """``passes_holdout`` on the learning period, the kept share's Wilson lower bound at ≥ 95%.

    The interval is over both samples' noise: the share is measured on ``current.caught`` learning
    positives and will be judged on ``holdout_positives`` later ones (their count only; how candidates
    do there is not looked at), so its effective size is ``1 / (1/learn + 1/holdout)``.
    """
    if not passes_holdout(current, proposed)[0]:
        return False
    if proposed.caught >= current.caught:
        return True
    n = current.caught
    if holdout_positives > 0:
        n = 1 / (1 / current.caught + 1 / holdout_positives)
    bounds = wilson(proposed.caught / current.caught * n, n, z=KEEP_CONFIDENCE_Z)
    return bounds is not None and bounds[0] >= KEEP_TRUE


def _weighted_tally(flags: Any, mask: Any, positive: Any, weight: Any) -> Tally:
    """``tally`` over the rows in ``mask``, as vector sums (a candidate at a time)."""
    return Tally(
        caught=float(weight[mask & positive & flags].sum()),
        false_alarms=float(weight[mask & ~positive & flags].sum()),
        missed=float(weight[mask & positive & ~flags].sum()),
        cleared=float(weight[mask & ~positive & ~flags].sum()),
    )


def sweep_version(
    version: RuleVersion,
    *,
    settings: LearningSettings | None = None,
    cases: list[Case] | None = None,
) -> list[Sweep]:
    """Sweep every movable condition of ``version`` (each with the others held at their values).

    The evaluator runs three times per case, not once per candidate: with the rule as it is, with
    the condition forced true (its threshold beyond every observed value) and forced false. A candidate
    threshold only decides which of the last two outcomes a case gets, so every candidate is then a
    vector comparison. A case whose condition is unknown (no value, stale) or an error gets the same
    outcome from both, whatever the threshold — as the evaluator would give it.
    """
    import numpy as np

    settings = settings or LearningSettings.load()
    spec = version.spec
    subject_type = str(spec["subject"])
    tree = spec["when"]
    condition = compile_condition(tree, subject_type)
    raw_age = spec.get("max_fact_age")
    max_age = parse_duration(raw_age) if raw_age else None
    if cases is None:
        cases = rule_cases(version.rule.key, subject_type)
    split = time_split(cases, settings.holdout_fraction)
    rows = split.learn + split.holdout
    if not split.learn:
        return []
    miss_cost, fa_cost = float(settings.miss_cost), float(settings.false_alarm_cost)
    learning = np.arange(len(rows)) < len(split.learn)
    is_shadow = np.array([r.source == SHADOW for r in rows])
    is_stored = learning & ~is_shadow
    shadow_rows = learning & is_shadow
    positive = np.array([r.positive for r in rows])
    negative = ~positive
    weight = np.array([r.weight for r in rows])
    current_flags = _flags(condition, max_age, rows)
    enough = len(split.holdout) >= settings.min_holdout_labels
    sweeps = []
    for path, fact, op, value in sweepable(condition):
        fact_type = FACTS[fact].type
        numbers = [_decimal(r.values.get(fact)) for r in rows]
        present = [n for n, learn in zip(numbers, learning, strict=True) if n is not None and learn]
        if not present:
            continue
        everywhere = [n for n in numbers if n is not None]
        low, high = _tree_number(min(everywhere) - 1), _tree_number(max(everywhere) + 1)
        forced_true, forced_false = (high, low) if op in ("lt", "lte") else (low, high)
        if_true = _flags(
            compile_condition(with_threshold(tree, path, forced_true), subject_type), max_age, rows
        )
        if_false = _flags(
            compile_condition(with_threshold(tree, path, forced_false), subject_type), max_age, rows
        )
        observed = np.array([np.nan if n is None else float(n) for n in numbers])

        def figures(threshold: Any, flags: Any) -> Figures:
            hit_stored = flags & is_stored
            f = Figures(
                threshold=threshold,
                matches=int(hit_stored.sum()),
                positive=int((hit_stored & positive).sum()),
                negative=int((hit_stored & negative).sum()),
                misses=int((~flags & is_stored & positive).sum()),
                shadow_misses=float(weight[~flags & shadow_rows & positive].sum()),
                shadow_false_alarms=float(weight[flags & shadow_rows & negative].sum()),
            )
            f.expected_cost = miss_cost * (f.misses + f.shadow_misses) + fa_cost * (
                f.negative + f.shadow_false_alarms
            )
            return f

        current = figures(value, current_flags)
        results: list[tuple[Figures, Any]] = []
        for candidate in candidate_values(present, fact_type, value, settings.max_candidates):
            # A strict bound at an observed value would exclude that value: move it one step out.
            candidate += {"lt": _STEP[fact_type], "gt": -_STEP[fact_type]}.get(op, Decimal(0))
            flags = np.where(_leaf_true(op, observed, float(candidate)), if_true, if_false)
            results.append((figures(_tree_number(candidate), flags), flags))
        here = _decimal(value) or Decimal(0)

        def rank(item: tuple[Figures, Any], here: Decimal = here) -> tuple[float, Decimal]:
            # Cheapest first; among equals, the smallest move from today's threshold.
            return item[0].expected_cost, abs((_decimal(item[0].threshold) or here) - here)

        n_learn = len(split.learn)
        learn_now = _weighted_tally(current_flags, learning, positive, weight)
        held_positives = _weighted_tally(current_flags, ~learning, positive, weight).caught
        # The learning period chooses, the held-out period judges: the cheapest candidate that on the
        # learning period already meets the rule it will be judged by (SPEC "Outcomes"), with a margin
        # (``meets_with_margin``). With noisy labels the unconstrained optimum often drops more than 5%
        # of the labelled true escalations in one move; a smaller move that keeps them is proposed
        # instead, and the next month's sweep can go on from there.
        meeting = [
            item
            for item in results
            if meets_with_margin(
                learn_now,
                _weighted_tally(item[1], learning, positive, weight),
                holdout_positives=held_positives,
            )
        ]
        best, best_flags = min(meeting or results, key=rank)
        sweep = Sweep(
            path=path,
            fact=fact,
            op=op,
            current=current,
            best=best,
            candidates=[f for f, _ in results],
            newly_matching=int((best_flags & ~current_flags & is_stored).sum()),
            no_longer_matching=int((current_flags & ~best_flags & is_stored).sum()),
            replayed=int(is_stored.sum()),
            shadow_rows=int(shadow_rows.sum()),
            split=split,
            learn_current=tally(split.learn, list(current_flags[:n_learn])),
            learn_best=tally(split.learn, list(best_flags[:n_learn])),
            holdout_current=tally(split.holdout, list(current_flags[n_learn:])),
            holdout_best=tally(split.holdout, list(best_flags[n_learn:])),
        )
        if not enough:
            sweep.reason = (
                f"the held-out period has {len(split.holdout)} labelled cases; "
                f"{settings.min_holdout_labels} are needed"
            )
        else:
            assert sweep.holdout_current is not None and sweep.holdout_best is not None
            sweep.passed, sweep.reason = passes_holdout(sweep.holdout_current, sweep.holdout_best)
        sweeps.append(sweep)
    return sweeps


# --- services --------------------------------------------------------------------------------------------


@transaction.atomic
def suggestions_generate(*, rule: Rule, actor: Actor = "system:learning") -> list[ThresholdSuggestion]:
    """Sweep the rule's live version; replace its open suggestions with the ones that cut the cost."""
    # One sweep per rule at a time: a second concurrent run waits here instead of colliding on the
    # one-open-suggestion-per-condition index.
    rule = Rule.objects.select_for_update(of=("self",)).select_related("live_version").get(pk=rule.pk)
    version = rule.live_version
    if version is None:
        return []
    settings = LearningSettings.load()
    sweeps = sweep_version(version, settings=settings)
    ThresholdSuggestion.objects.filter(rule=rule, status=ThresholdSuggestion.Status.OPEN).update(
        status=ThresholdSuggestion.Status.SUPERSEDED
    )
    now = timezone.now()
    made = [
        ThresholdSuggestion(
            rule=rule,
            rule_version=version,
            path=s.path,
            fact=s.fact,
            op=s.op,
            current_value=s.current.threshold,
            proposed_value=s.best.threshold,
            current=s.current.as_json(),
            proposed=s.best.as_json(),
            newly_matching=s.newly_matching,
            no_longer_matching=s.no_longer_matching,
            replayed=s.replayed,
            shadow_rows=s.shadow_rows,
            miss_cost=settings.miss_cost,
            false_alarm_cost=settings.false_alarm_cost,
            validation=s.validation(),
            created_at=now,
        )
        for s in sweeps
        if s.offered
    ]
    ThresholdSuggestion.objects.bulk_create(made)
    for suggestion in made:
        audit_record(
            action="threshold_suggestion.created",
            actor=actor,
            object_type="threshold_suggestion",
            object_id=suggestion.pk,
            data={
                "rule": rule.key,
                "version": version.number,
                "path": suggestion.path,
                "fact": suggestion.fact,
                "op": suggestion.op,
                "current": suggestion.current,
                "proposed": suggestion.proposed,
                "validation": suggestion.validation,
            },
        )
    return made


@transaction.atomic
def suggestion_apply(*, suggestion: ThresholdSuggestion, actor: Actor) -> Rule:
    """Write the suggested threshold into the rule's draft (not published: a person publishes it)."""
    suggestion = ThresholdSuggestion.objects.select_for_update().select_related("rule").get(pk=suggestion.pk)
    if suggestion.status != ThresholdSuggestion.Status.OPEN:
        raise SuggestionError(f"this suggestion is {suggestion.status}, not open")
    rule = Rule.objects.select_for_update().get(pk=suggestion.rule_id)
    draft = rule_from_dict(rule.draft).to_dict()
    try:
        leaf = leaf_at(draft["when"], suggestion.path)
    except (KeyError, IndexError, TypeError) as exc:
        raise SuggestionError(f"the draft no longer has a condition at {suggestion.path}") from exc
    if leaf.get("fact") != suggestion.fact or leaf.get("op") != suggestion.op:
        raise SuggestionError(
            f"the draft's condition at {suggestion.path} is now {leaf.get('fact')} {leaf.get('op')}, "
            f"not {suggestion.fact} {suggestion.op}"
        )
    before = leaf.get("value")
    draft["when"] = with_threshold(draft["when"], suggestion.path, suggestion.proposed_value)
    rule.draft = rule_from_dict(draft).to_dict()  # validates the changed draft before it is stored
    rule.save(update_fields=["draft", "updated_at"])
    suggestion.status = ThresholdSuggestion.Status.APPLIED
    suggestion.decided_at = timezone.now()
    suggestion.decided_by = actor if getattr(actor, "is_authenticated", False) else None  # type: ignore[assignment]
    suggestion.save(update_fields=["status", "decided_at", "decided_by"])
    audit_record(
        action="threshold_suggestion.applied",
        actor=actor,
        object_type="rule",
        object_id=rule.key,
        data={
            "suggestion": suggestion.pk,
            "path": suggestion.path,
            "fact": suggestion.fact,
            "op": suggestion.op,
            "from": before,
            "to": suggestion.proposed_value,
            "published": False,
        },
    )
    return rule


@transaction.atomic
def suggestion_dismiss(*, suggestion: ThresholdSuggestion, actor: Actor) -> None:
    updated = ThresholdSuggestion.objects.filter(
        pk=suggestion.pk, status=ThresholdSuggestion.Status.OPEN
    ).update(status=ThresholdSuggestion.Status.DISMISSED, decided_at=timezone.now())
    if updated:
        audit_record(
            action="threshold_suggestion.dismissed",
            actor=actor,
            object_type="threshold_suggestion",
            object_id=suggestion.pk,
            data={"rule_version": suggestion.rule_version_id, "path": suggestion.path},
        )
