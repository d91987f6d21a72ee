"""Preview: what would this draft match now, and how does that differ from the live version?

The draft's condition and the live version's are evaluated over current data in one SQL query
(:mod:`apps.rules.evaluation.sql`, which agrees with the Python evaluator subject by subject), with each
rule's own ``max_fact_age`` judged against the current age of the synced data, exactly as a live
evaluation would.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from django.utils import timezone

from apps.rules.engine.evaluator import Verdict
from apps.rules.engine.ruleset import RulesFileError, RuleSpec, rule_from_dict
from apps.rules.evaluation.sql import RuleQuery, batch_outcomes_many

if TYPE_CHECKING:
    from apps.rules.authoring.publishing import PublishEstimate

SAMPLE: Final = 10


@dataclass(frozen=True)
class PreviewResult:
    """Counts per outcome for the draft (and the live version), sample matches and the delta."""

    rule_key: str
    subject_type: str
    evaluated_at: dt.datetime
    subjects: int
    counts: dict[str, int]
    samples: list[int]
    live_version: int | None = None
    live_counts: dict[str, int] = field(default_factory=dict)
    new: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    new_count: int = 0
    gone_count: int = 0
    # What publishing this draft now would do (the single-rule preview only; shadow runs skip it).
    estimate: PublishEstimate | None = None

    @property
    def matches(self) -> int:
        return self.counts.get(Verdict.MATCHED.value, 0)

    @property
    def live_matches(self) -> int:
        return self.live_counts.get(Verdict.MATCHED.value, 0)

    def summary(self) -> str:
        """One line for an admin message."""
        subjects = f"{self.subjects:,} {self.subject_type.replace('_', ' ')}s"
        parts = [f"{self.rule_key}: the draft matches {self.matches:,} of {subjects} now"]
        unknown = self.counts.get(Verdict.INSUFFICIENT_DATA.value, 0)
        if unknown:
            parts.append(f"{unknown:,} with insufficient data")
        if self.live_version is None:
            parts.append("no live version to compare")
        else:
            parts.append(
                f"live v{self.live_version} matches {self.live_matches:,}: "
                f"{self.new_count:,} new, {self.gone_count:,} no longer"
            )
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule_key,
            "subject_type": self.subject_type,
            "evaluated_at": self.evaluated_at.isoformat(),
            "subjects": self.subjects,
            "counts": dict(self.counts),
            "samples": list(self.samples),
            "live_version": self.live_version,
            "live_counts": dict(self.live_counts),
            "new": list(self.new),
            "gone": list(self.gone),
            "new_count": self.new_count,
            "gone_count": self.gone_count,
        }


def _counts(outcomes: Mapping[int, str]) -> dict[str, int]:
    counted = Counter(outcomes.values())
    return {o.value: counted.get(o.value, 0) for o in Verdict if o is not Verdict.ERROR}


def preview_draft(
    rule: Any, *, draft: Mapping[str, Any] | None = None, now: dt.datetime | None = None
) -> PreviewResult:
    """What ``rule``'s draft (or ``draft``, the rules-file shape) would match now, vs. its live version.

    Raises :class:`~apps.rules.engine.ruleset.RulesFileError` (every problem) if the draft is invalid.
    """
    now = now or timezone.now()
    raw = dict(draft if draft is not None else rule.draft)
    raw["key"] = rule.key
    spec = rule_from_dict(raw)
    queries = [RuleQuery.of(spec)]
    version = rule.live_version
    live_query = RuleQuery.of(version) if version is not None else None
    if live_query is not None and live_query.subject_type == spec.subject:
        queries.append(live_query)  # one query computes the facts once for both
    higher = _higher_route_versions(rule, spec)
    results = batch_outcomes_many([*queries, *(RuleQuery.of(v) for v in higher)], spec.subject, now=now)
    higher_matched = {
        sid
        for outcomes in results[len(queries) :]
        for sid, o in outcomes.items()
        if o == Verdict.MATCHED.value
    }
    results = results[: len(queries)]
    if live_query is None or live_query.subject_type == spec.subject:
        result = _compare(rule, spec, results[0], results[1] if len(results) > 1 else None, now)
        return _with_estimate(result, rule, results[0], higher_matched, now)
    # The draft moved the rule to another subject type: everything it matches is new, everything the
    # live version matches is gone.
    drafted = results[0]
    live = batch_outcomes_many([live_query], live_query.subject_type, now=now)[0]
    matched = Verdict.MATCHED.value
    draft_matches = [sid for sid, outcome in drafted.items() if outcome == matched]
    gone_ids = [sid for sid, outcome in live.items() if outcome == matched]
    result = _with(
        _drafted(rule, spec, drafted, draft_matches, now),
        new=draft_matches,
        gone=gone_ids,
        live_version=version.number,
        live_counts=_counts(live),
    )
    return _with_estimate(result, rule, drafted, higher_matched, now)


def _higher_route_versions(rule: Any, spec: RuleSpec) -> list[Any]:
    """The live versions that would take a subject the draft matches away from it: an evaluation walks
    the rules in priority order and a match on a higher route suppresses the lower routes after it
    (``services._evaluate_batch``)."""
    from apps.rules.evaluation.services import _ROUTE_RANK, live_versions

    rank = _ROUTE_RANK.get(spec.route, 1)
    order = (spec.priority, rule.key)
    return [
        v
        for v in live_versions(spec.subject)
        if v.rule_id != getattr(rule, "pk", None)
        and _ROUTE_RANK.get(v.route, 1) < rank
        and (int(v.spec.get("priority", 100)), v.rule.key) < order
    ]


def _with_estimate(
    result: PreviewResult, rule: Any, drafted: Mapping[int, str], higher_matched: set[int], now: dt.datetime
) -> PreviewResult:
    from apps.rules.authoring.publishing import publish_estimate

    matched = [sid for sid, outcome in drafted.items() if outcome == Verdict.MATCHED.value]
    estimate = publish_estimate(
        rule_id=getattr(rule, "pk", None),
        enabled=bool(getattr(rule, "enabled", True)),
        subject_type=result.subject_type,
        subjects=result.subjects,
        matched=matched,
        higher_matched=higher_matched,
        now=now,
    )
    return replace(result, estimate=estimate)


def preview_drafts(
    rules: Sequence[Any], *, now: dt.datetime | None = None
) -> list[PreviewResult | RulesFileError]:
    """:func:`preview_draft` for several rules' drafts, with one facts query per subject type (shadow
    runs): each rule's result, or the ``RulesFileError`` of an invalid draft, in the order given."""
    now = now or timezone.now()
    out: list[PreviewResult | RulesFileError | None] = [None] * len(rules)
    groups: dict[str, list[tuple[int, Any, RuleSpec]]] = defaultdict(list)
    for i, rule in enumerate(rules):
        try:
            spec = rule_from_dict({**rule.draft, "key": rule.key})
        except RulesFileError as exc:
            out[i] = exc
            continue
        version = rule.live_version
        if version is not None and version.spec.get("subject") != spec.subject:
            out[i] = preview_draft(rule, now=now)  # rare: compared across two subject types
            continue
        groups[spec.subject].append((i, rule, spec))
    for subject_type, members in groups.items():
        queries: list[RuleQuery] = []
        slots: list[tuple[int, Any, RuleSpec, int, int | None]] = []
        for i, rule, spec in members:
            draft_slot = len(queries)
            queries.append(RuleQuery.of(spec))
            live_slot = None
            if rule.live_version is not None:
                live_slot = len(queries)
                queries.append(RuleQuery.of(rule.live_version))
            slots.append((i, rule, spec, draft_slot, live_slot))
        results = batch_outcomes_many(queries, subject_type, now=now)
        for i, rule, spec, draft_slot, live_slot in slots:
            live = results[live_slot] if live_slot is not None else None
            out[i] = _compare(rule, spec, results[draft_slot], live, now)
    return [r for r in out if r is not None]


def _drafted(
    rule: Any, spec: RuleSpec, drafted: Mapping[int, str], draft_matches: list[int], now: dt.datetime
) -> PreviewResult:
    return PreviewResult(
        rule_key=rule.key,
        subject_type=spec.subject,
        evaluated_at=now,
        subjects=len(drafted),
        counts=_counts(drafted),
        samples=draft_matches[:SAMPLE],
    )


def _compare(
    rule: Any, spec: RuleSpec, drafted: Mapping[int, str], live: Mapping[int, str] | None, now: dt.datetime
) -> PreviewResult:
    """The draft's outcomes against the live version's, both over the same subjects."""
    matched = Verdict.MATCHED.value
    draft_matches = [sid for sid, outcome in drafted.items() if outcome == matched]
    result = _drafted(rule, spec, drafted, draft_matches, now)
    version = rule.live_version
    if version is None or live is None:
        return _with(result, new=draft_matches, gone=[])
    new_ids = [sid for sid in draft_matches if live.get(sid) != matched]
    gone_ids = [sid for sid, outcome in live.items() if outcome == matched and drafted.get(sid) != matched]
    return _with(result, new=new_ids, gone=gone_ids, live_version=version.number, live_counts=_counts(live))


def _with(
    result: PreviewResult,
    *,
    new: list[int],
    gone: list[int],
    live_version: int | None = None,
    live_counts: dict[str, int] | None = None,
) -> PreviewResult:
    return PreviewResult(
        rule_key=result.rule_key,
        subject_type=result.subject_type,
        evaluated_at=result.evaluated_at,
        subjects=result.subjects,
        counts=result.counts,
        samples=result.samples,
        live_version=live_version,
        live_counts=live_counts or {},
        new=new[:SAMPLE],
        gone=gone[:SAMPLE],
        new_count=len(new),
        gone_count=len(gone),
    )


def needs_confirmation(result: PreviewResult, threshold: int) -> bool:
    """Whether publishing should ask "are you sure?": the draft would newly match more than ``threshold``
    subjects (each may open an escalation and send emails), or matches nothing the live version matched
    while the live version matches more than ``threshold`` (a rule silently switched off)."""
    if threshold < 0:
        raise ValueError("threshold must be zero or more")
    if result.new_count > threshold:
        return True
    return result.matches == 0 and result.gone_count > threshold
