"""The one point-in-time reading of labels that backtests, analytics and suggestions share.

A *case* is one labelled judgement with the facts it was made on (ANCHORS, Audit and learning 6):

* an escalation of the rule closed as acted on (*positive*: ``actioned`` / ``approved`` /
  ``rejected``) or not (*negative*: ``no_action_needed`` / ``false_alarm``), with the facts of the
  decision that opened it (``opened_facts``), at ``opened_at``. Never the
  subject's newest context: a project fixed after the outcome (margin up 12 points) must not teach
  that the old threshold flagged healthy projects;
* a reported miss (always positive), with the subject's stored facts as of ``missed_at``;
* a settled shadow sample, with its facts at ``sampled_at``; it stands for ``weight`` unflagged
  subjects.

``duplicate``, ``auto_resolved`` and open escalations say nothing about whether the rule was right
and are not cases.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from apps.rules.evaluation.backtest import NEGATIVE, POSITIVE, context_from_snapshot

ESCALATION: Final = "escalation"
MISS: Final = "miss"
SHADOW: Final = "shadow"


@dataclass
class Case:
    """One labelled judgement: the facts as they were at ``at``, and whether acting was right."""

    source: str
    subject_id: int
    at: dt.datetime
    values: dict[str, object]
    ages: dict[str, Any]
    positive: bool
    weight: float = 1.0
    ref: int | None = None  # the escalation, miss or sample id


def _facts(evidence: object) -> object:
    return evidence.get("facts") if isinstance(evidence, dict) else None


def opened_facts(
    opened_evidence: object,
    opening_decision_facts: object,
    evidence: object,
    evidence_decision_facts: object = None,
) -> object:
    """The facts an escalation opened on, from its row's ``opened_evidence``, ``opened_decision__facts``,
    ``evidence_copy`` and ``evidence_decision__facts``: the evidence it stored when it opened (escalations
    opened before they kept their opening decision), else its opening decision's facts, else (neither
    kept) its current evidence's, its copy's or its firing decision's: a closed escalation's evidence no
    longer moves, so it is the facts of its last fire at worst."""
    return _facts(opened_evidence) or opening_decision_facts or _facts(evidence) or evidence_decision_facts


def escalation_cases(
    rule_key: str,
    subject_type: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[Case]:
    from apps.escalations.models import Escalation

    qs = Escalation.objects.filter(
        rule__key=rule_key, subject_type=subject_type, outcome__in=POSITIVE + NEGATIVE
    )
    if since is not None:
        qs = qs.filter(opened_at__gte=since)
    if until is not None:
        qs = qs.filter(opened_at__lt=until)
    out = []
    rows = qs.order_by("opened_at", "id").values_list(
        *("id", "subject_id", "opened_at", "outcome", "opened_evidence", "opened_decision__facts"),
        *("evidence_copy", "evidence_decision__facts"),
    )
    for pk, subject_id, opened_at, outcome, *evidence in rows.iterator(chunk_size=2000):
        values, ages = context_from_snapshot(opened_facts(*evidence))
        out.append(Case(ESCALATION, subject_id, opened_at, values, ages, outcome in POSITIVE, ref=pk))
    return out


def miss_cases(
    rule_key: str | None,
    subject_type: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[Case]:
    from django.db.models import Q

    from .models import ReportedMiss

    qs = ReportedMiss.objects.filter(subject_type=subject_type)
    if rule_key is not None:
        qs = qs.filter(Q(rule__isnull=True) | Q(rule__key=rule_key))
    if since is not None:
        qs = qs.filter(missed_at__gte=since)
    if until is not None:
        qs = qs.filter(missed_at__lt=until)
    out = []
    for pk, subject_id, missed_at, facts in qs.values_list("id", "subject_id", "missed_at", "facts"):
        values, ages = context_from_snapshot(facts)
        # Judged as fresh: the person reports what was true then, not a sync that ran late.
        out.append(Case(MISS, subject_id, missed_at, values, dict.fromkeys(ages, 0.0), True, ref=pk))
    return out


def shadow_cases(
    subject_type: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[Case]:
    from .models import ShadowSample

    qs = ShadowSample.objects.filter(subject_type=subject_type, positive__isnull=False)
    if since is not None:
        qs = qs.filter(sampled_at__gte=since)
    if until is not None:
        qs = qs.filter(sampled_at__lt=until)
    out = []
    rows = qs.values_list("id", "subject_id", "sampled_at", "facts", "positive", "weight")
    for pk, subject_id, sampled_at, facts, positive, weight in rows.iterator(chunk_size=2000):
        values, ages = context_from_snapshot(facts)
        # Shadow facts were computed for the sample, not synced late: judged as fresh.
        out.append(
            Case(SHADOW, subject_id, sampled_at, values, dict.fromkeys(ages, 0.0), bool(positive), weight, pk)
        )
    return out


def rule_cases(
    rule_key: str,
    subject_type: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[Case]:
    """Every case about ``rule_key``'s subjects in ``[since, until)``, oldest first."""
    cases = escalation_cases(rule_key, subject_type, since=since, until=until)
    cases += miss_cases(rule_key, subject_type, since=since, until=until)
    cases += shadow_cases(subject_type, since=since, until=until)
    cases.sort(key=lambda c: (c.at, c.source, c.ref or 0))
    return cases


@dataclass(frozen=True)
class Split:
    """A time split: cases before ``cutoff`` to learn from, the rest held out to judge on."""

    learn: list[Case]
    holdout: list[Case]
    cutoff: dt.datetime | None

    def period(self, which: str) -> dict[str, str | None]:
        cases = self.learn if which == "learn" else self.holdout
        return {
            "from": cases[0].at.isoformat() if cases else None,
            "to": cases[-1].at.isoformat() if cases else None,
            "cases": str(len(cases)),
        }


def time_split(cases: Sequence[Case], fraction: float | Decimal) -> Split:
    """Hold out the latest ``fraction`` of the cases (by time); a tie at the cutoff stays together."""
    ordered = sorted(cases, key=lambda c: c.at)
    if not ordered:
        return Split([], [], None)
    index = max(0, min(len(ordered) - 1, round(len(ordered) * (1 - float(fraction)))))
    cutoff = ordered[index].at
    return Split([c for c in ordered if c.at < cutoff], [c for c in ordered if c.at >= cutoff], cutoff)


@dataclass
class Tally:
    """How a condition did on a set of cases (weighted: a shadow sample counts ``weight`` times)."""

    caught: float = 0.0  # positives it matches
    false_alarms: float = 0.0  # negatives it matches
    missed: float = 0.0  # positives it does not match
    cleared: float = 0.0  # negatives it does not match
    by_source: dict[str, int] = field(default_factory=dict)

    @property
    def labelled_matches(self) -> float:
        return self.caught + self.false_alarms

    @property
    def false_alarm_ratio(self) -> float | None:
        return self.false_alarms / self.labelled_matches if self.labelled_matches else None

    @property
    def precision(self) -> float | None:
        return self.caught / self.labelled_matches if self.labelled_matches else None

    @property
    def recall(self) -> float | None:
        """Only meaningful when misses can be seen at all (reported misses or shadow samples)."""
        known = self.caught + self.missed
        return self.caught / known if known else None

    def as_json(self) -> dict[str, Any]:
        return {
            "caught": round(self.caught, 4),
            "false_alarms": round(self.false_alarms, 4),
            "missed": round(self.missed, 4),
            "false_alarm_ratio": self.false_alarm_ratio,
            "precision": self.precision,
            "recall": self.recall,
        }


def tally(cases: Sequence[Case], flags: Sequence[bool]) -> Tally:
    t = Tally()
    for case, flagged in zip(cases, flags, strict=True):
        t.by_source[case.source] = t.by_source.get(case.source, 0) + 1
        if case.positive:
            if flagged:
                t.caught += case.weight
            else:
                t.missed += case.weight
        elif flagged:
            t.false_alarms += case.weight
        else:
            t.cleared += case.weight
    return t


KEEP_TRUE: Final = 0.95


def passes_holdout(current: Tally, proposed: Tally) -> tuple[bool, str]:
    """SPEC "Outcomes": a lower false-alarm ratio while keeping ≥ 95% of the true escalations."""
    if proposed.false_alarm_ratio is None or current.false_alarm_ratio is None:
        return False, "the held-out period has no labelled matches to judge on"
    if current.caught and proposed.caught < KEEP_TRUE * current.caught:
        return False, (
            f"keeps {proposed.caught:g} of {current.caught:g} true escalations on the held-out period "
            f"(needs {KEEP_TRUE:.0%})"
        )
    if not proposed.false_alarm_ratio < current.false_alarm_ratio:
        return False, (
            f"false-alarm ratio {proposed.false_alarm_ratio:.1%} on the held-out period is not below "
            f"{current.false_alarm_ratio:.1%}"
        )
    return True, "lowers the false-alarm ratio on the held-out period and keeps ≥ 95% of true escalations"
