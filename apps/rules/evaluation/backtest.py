"""Backtest: replay a rule, or a draft of it, over stored decision contexts (SPEC ``backtest``).

A backtest runs the *same* evaluator as live evaluation (ANCHORS, Rules 5) on point-in-time data: the
fact snapshots that :class:`~apps.rules.models.Decision` rows stored — values and their ages at that
moment — so ``max_fact_age`` judges staleness as it was then. It replays *every* stored context of the
rule's subject type in the chosen period ``[since, until)``, each as of its own decision (one per
subject and instant), evaluates the candidate (a draft, or the live version) and the live version, and
reports

* how many contexts were replayed and their outcomes, and the matches per day (the chart in admin);
* precision (and recall where misses can be seen) on the labelled cases of the period
  (``apps.learning.cases``): each escalation of this rule closed as *positive* (``actioned`` /
  ``approved`` / ``rejected``) or *negative* (``no_action_needed`` / ``false_alarm``) judged on the
  facts it was opened on — never the subject's newest context — plus reported misses and settled
  shadow samples with the facts of their time; ``duplicate``, ``auto_resolved`` and open escalations
  are unlabelled;
* the delta to the live version: contexts newly matching and no longer matching, with sample subjects
  and their facts.

Cost is capped: at most ``limit`` contexts (100,000 by default), streamed from a server-side cursor.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from apps.rules.engine.catalogue import FACTS, FactType
from apps.rules.engine.durations import parse_duration
from apps.rules.engine.evaluator import CompiledCondition, Verdict, compile_condition
from apps.rules.engine.ruleset import RulesFileError, RuleSpec, parse_rules

POSITIVE: Final = ("actioned", "approved", "rejected")
NEGATIVE: Final = ("no_action_needed", "false_alarm")
DEFAULT_LIMIT: Final = 100_000
SAMPLE: Final = 10
_CHUNK: Final = 2_000


class BacktestError(ValueError):
    """Why a backtest cannot run (unknown rule, a rules file with problems, ...), fit for an operator."""


@dataclass(frozen=True)
class Candidate:
    """What is replayed: a condition with its staleness limit, and where it came from."""

    key: str
    subject_type: str
    condition: CompiledCondition
    max_age: dt.timedelta | None
    label: str
    version: int | None = None  # the live version's number; None for a draft


@dataclass
class Precision:
    positive: int = 0
    negative: int = 0

    @property
    def labelled(self) -> int:
        return self.positive + self.negative

    @property
    def value(self) -> float | None:
        return self.positive / self.labelled if self.labelled else None

    def __str__(self) -> str:
        if not self.labelled:
            return "n/a (no labelled matches)"
        return f"{self.positive} of {self.labelled} = {100 * self.positive / self.labelled:.1f}%"


@dataclass
class BacktestResult:
    candidate: Candidate
    live: Candidate | None
    since: dt.datetime | None
    limit: int
    replayed: int = 0
    limited: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    live_outcomes: Counter[str] = field(default_factory=Counter)
    precision: Precision = field(default_factory=Precision)
    live_precision: Precision = field(default_factory=Precision)
    newly_matching: list[int] = field(default_factory=list)
    no_longer_matching: list[int] = field(default_factory=list)
    newly_matching_count: int = 0
    no_longer_matching_count: int = 0
    positives_lost: int = 0
    until: dt.datetime | None = None
    # Matches per day: {date: [candidate, live]} (live stays 0 when there is nothing to compare).
    timeline: dict[dt.date, list[int]] = field(default_factory=dict)
    # A few matching subjects with the facts they matched on: (subject, when, values).
    examples: list[tuple[int, dt.datetime, dict[str, object]]] = field(default_factory=list)
    cases: int = 0
    caught: float = 0.0  # labelled positives (misses and shadow samples included) the candidate matches
    missed: float = 0.0
    live_caught: float = 0.0
    live_missed: float = 0.0
    recall_estimable: bool = False  # misses are visible only through reported misses or shadow samples

    @property
    def matches(self) -> int:
        return self.outcomes[Verdict.MATCHED.value]

    @property
    def recall(self) -> float | None:
        known = self.caught + self.missed
        return self.caught / known if self.recall_estimable and known else None

    @property
    def live_recall(self) -> float | None:
        known = self.live_caught + self.live_missed
        return self.live_caught / known if self.recall_estimable and known else None

    def recall_text(self) -> str:
        if not self.recall_estimable:
            return "cannot be estimated (no reported misses or shadow samples in the period)"
        if self.recall is None:
            return "n/a (no true escalations in the period)"
        return f"{self.caught:g} of {self.caught + self.missed:g} = {100 * self.recall:.1f}%"

    @property
    def is_draft(self) -> bool:
        return self.live is None or self.candidate is not self.live

    def lines(self) -> list[str]:
        c = self.candidate
        window = (f"from {self.since:%Y-%m-%d}" if self.since else "from the first") + (
            f" until {self.until:%Y-%m-%d}" if self.until else " on"
        )
        out = [f"Backtest of {c.key} ({c.subject_type}): {c.label}"]
        out.append(
            f"Contexts replayed: {self.replayed:,} (every stored decision context of a {c.subject_type}, "
            f"each as of its decision, {window}; limit {self.limit:,}{', reached' if self.limited else ''})"
        )
        out.append("Outcomes: " + ", ".join(f"{o.value} {self.outcomes[o.value]:,}" for o in Verdict))
        live_matches = self.live_outcomes[Verdict.MATCHED.value]
        also = f" (live v{self.live.version}: {live_matches:,})" if self.live and self.is_draft else ""
        out.append(f"Matches: {self.matches:,}{also}")
        also = f" (live: {self.live_precision})" if self.live and self.is_draft else ""
        out.append(f"Precision on labelled outcomes: {self.precision}{also}")
        out.append(f"Recall: {self.recall_text()}")
        out.append(
            f"  labels: {self.cases:,} cases in the period, each escalation of this rule judged on the facts "
            f"it was opened on; positive = {', '.join(POSITIVE)}; negative = {', '.join(NEGATIVE)}; "
            "duplicate, auto_resolved and open escalations are unlabelled; reported misses count as positive"
        )
        if self.live is None:
            out.append("Delta to the live version: none to compare (the rule has no live version)")
        elif not self.is_draft:
            out.append(
                f"Delta to the live version: none (replaying the live version v{self.live.version} itself)"
            )
        elif self.live.subject_type != c.subject_type:
            out.append(
                f"Delta to the live version: not comparable (live is on {self.live.subject_type}, "
                f"the draft on {c.subject_type})"
            )
        else:
            out.append(f"Delta to the live version v{self.live.version}:")
            out.append(f"  newly matching: {self.newly_matching_count:,}{_ids(self.newly_matching)}")
            out.append(
                f"  no longer matching: {self.no_longer_matching_count:,}{_ids(self.no_longer_matching)}"
            )
            if self.positives_lost:
                out.append(f"  labelled positives the draft no longer matches: {self.positives_lost:,}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _ids(ids: list[int]) -> str:
    return f" (ids {', '.join(str(i) for i in ids)}{', ...' if len(ids) >= SAMPLE else ''})" if ids else ""


# --- what to replay ------------------------------------------------------------------------------------


def draft_from_file(text: str, key: str, *, name: str = "the file") -> RuleSpec:
    """The rule ``key`` of a rules file; every problem of the file, with its line, if it has any."""
    try:
        specs = parse_rules(text)
    except RulesFileError as exc:
        problems = "\n".join(f"  {p}" for p in exc.errors)
        raise BacktestError(f"{name}: {len(exc.errors)} problem(s)\n{problems}") from exc
    for spec in specs:
        if spec.key == key:
            return spec
    keys = [s.key for s in specs]
    hint = difflib.get_close_matches(key, keys, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    raise BacktestError(f"{name} has no rule {key!r}{suggestion} (it has: {', '.join(keys) or 'no rules'})")


def _live_candidate(rule: Any) -> Candidate | None:
    version = rule.live_version
    if version is None:
        return None
    spec = version.spec
    raw_age = spec.get("max_fact_age")
    return Candidate(
        key=rule.key,
        subject_type=str(spec["subject"]),
        condition=compile_condition(spec["when"], spec["subject"]),
        max_age=parse_duration(raw_age) if raw_age else None,
        label=f"live version v{version.number}",
        version=version.number,
    )


def candidates(
    key: str, draft: RuleSpec | None, *, file_name: str = "the file"
) -> tuple[Candidate, Candidate | None]:
    """(what to replay, the live version or None) for ``key``."""
    from apps.rules.models import Rule

    rule = Rule.objects.select_related("live_version").filter(key=key).first()
    if rule is None and draft is None:
        keys = list(Rule.objects.order_by("key").values_list("key", flat=True))
        hint = difflib.get_close_matches(key, keys, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        shown = ", ".join(keys[:20]) + (", ..." if len(keys) > 20 else "")
        raise BacktestError(f"unknown rule {key!r}{suggestion} (known rules: {shown or 'none'})")
    live = _live_candidate(rule) if rule is not None else None
    if draft is None:
        if live is None:
            raise BacktestError(f"rule {key!r} has no published version; give a draft with --file")
        return live, live
    candidate = Candidate(
        key=key,
        subject_type=draft.subject,
        condition=draft.compile(),
        max_age=draft.max_fact_age,
        label=f"draft from {file_name}" + (f" vs {live.label}" if live else ""),
    )
    return candidate, live


# --- stored contexts -----------------------------------------------------------------------------------


def _typed(raw: object, fact_type: FactType) -> object:
    """A snapshot value back in the type the facts query produced (Decimal and dates were stored as text).

    Anything unreadable is passed through unchanged, so the evaluator reports it as an ``error``.
    """
    if raw is None or not isinstance(raw, str):
        return raw
    if fact_type in (FactType.MONEY, FactType.PERCENT, FactType.SCORE):
        try:
            return Decimal(raw)
        except InvalidOperation:
            return raw
    if fact_type is FactType.DATE:
        try:
            return dt.date.fromisoformat(raw)
        except ValueError:
            return raw
    return raw


def context_from_snapshot(snapshot: object) -> tuple[dict[str, object], dict[str, Any]]:
    """``Decision.facts`` (``{fact: {value, age_s, ...}}``) → (values, ages) for the evaluator."""
    values: dict[str, object] = {}
    ages: dict[str, Any] = {}
    if not isinstance(snapshot, Mapping):
        return values, ages
    for name, entry in snapshot.items():
        fact = FACTS.get(name)
        if fact is None or not isinstance(entry, Mapping):
            continue
        values[name] = _typed(entry.get("value"), fact.type)
        ages[name] = entry.get("age_s")
    return values, ages


# The newest stored context per subject: a traced decision's facts, or the snapshot its first bulk run
# took of a subject no decision traced (values only; the ages are the run's). At the same instant the
# decision wins: it has the ages and sources of each fact.
_CONTEXTS = """
SELECT DISTINCT ON (subject_id) subject_id, facts, values, ages FROM (
    SELECT d.subject_id, d.evaluated_at AS at, 0 AS rank, d.id AS tie, d.facts::text AS facts,
           NULL::text AS values, NULL::text AS ages
      FROM rules_decision d
     WHERE d.subject_type = %(subject_type)s AND d.facts IS NOT NULL AND d.evaluated_at >= %(since)s
    UNION ALL
    SELECT s.subject_id, r.evaluated_at, 1, s.id, NULL, s."values"::text, r.ages::text
      FROM rules_contextsnapshot s JOIN rules_evaluationrun r ON r.id = s.run_id
     WHERE s.subject_type = %(subject_type)s AND r.evaluated_at >= %(since)s
) c
ORDER BY subject_id, at DESC, rank, tie DESC
LIMIT %(limit)s
"""


def stored_contexts(
    subject_type: str, *, since: dt.datetime | None = None, limit: int = DEFAULT_LIMIT
) -> Iterator[tuple[int, Any]]:
    """``(subject_id, facts snapshot)`` of the newest stored context per subject, streamed, in the shape
    of ``Decision.facts``.

    Yields up to ``limit + 1`` rows so that the caller can tell that the limit cut the replay short.
    """
    from django.db import connection

    params: dict[str, Any] = {
        "subject_type": subject_type,
        "since": since or dt.datetime.min.replace(tzinfo=dt.UTC),
        "limit": limit + 1,  # one more, to tell "limit reached"
    }
    with connection.chunked_cursor() as cursor:
        cursor.execute(_CONTEXTS, params)
        while rows := cursor.fetchmany(_CHUNK):
            for subject_id, facts, values, ages in rows:
                if facts is not None:
                    yield subject_id, json.loads(facts)
                    continue
                # Snapshot values are JSON numbers: read money and percentages as exact decimals.
                run_ages = json.loads(ages)
                stored = json.loads(values, parse_float=Decimal)
                if isinstance(stored, list):  # the values in the order of the run's sorted fact names
                    stored = dict(zip(sorted(run_ages), stored, strict=True))
                yield (
                    subject_id,
                    {name: {"value": value, "age_s": run_ages.get(name)} for name, value in stored.items()},
                )


# Every stored context in the period, oldest first: one per subject and instant (a bulk run that traced a
# subject also snapshotted it; several rules' decisions of one evaluation share its facts).
_PERIOD_CONTEXTS = """
SELECT DISTINCT ON (at, subject_id) subject_id, at, facts, values, ages FROM (
    SELECT d.subject_id, d.evaluated_at AS at, 0 AS rank, d.id AS tie, d.facts::text AS facts,
           NULL::text AS values, NULL::text AS ages
      FROM rules_decision d
     WHERE d.subject_type = %(subject_type)s AND d.facts IS NOT NULL
       AND d.evaluated_at >= %(since)s AND d.evaluated_at < %(until)s
    UNION ALL
    SELECT s.subject_id, r.evaluated_at, 1, s.id, NULL, s."values"::text, r.ages::text
      FROM rules_contextsnapshot s JOIN rules_evaluationrun r ON r.id = s.run_id
     WHERE s.subject_type = %(subject_type)s AND r.evaluated_at >= %(since)s AND r.evaluated_at < %(until)s
) c
ORDER BY at, subject_id, rank, tie DESC
LIMIT %(limit)s
"""


def _snapshot_of(facts: str | None, values: str | None, ages: str | None) -> dict[str, Any]:
    if facts is not None:
        loaded: dict[str, Any] = json.loads(facts)
        return loaded
    # Snapshot values are JSON numbers: read money and percentages as exact decimals.
    run_ages = json.loads(ages or "{}")
    stored = json.loads(values or "{}", parse_float=Decimal)
    if isinstance(stored, list):  # the values in the order of the run's sorted fact names
        stored = dict(zip(sorted(run_ages), stored, strict=True))
    return {name: {"value": value, "age_s": run_ages.get(name)} for name, value in stored.items()}


def period_contexts(
    subject_type: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Iterator[tuple[int, dt.datetime, dict[str, Any]]]:
    """``(subject_id, evaluated_at, facts snapshot)`` of every stored context in ``[since, until)``,
    oldest first, streamed; up to ``limit + 1`` rows, so the caller can tell the limit was reached."""
    from django.db import connection

    params: dict[str, Any] = {
        "subject_type": subject_type,
        "since": since or dt.datetime.min.replace(tzinfo=dt.UTC),
        "until": until or dt.datetime.max.replace(tzinfo=dt.UTC),
        "limit": limit + 1,
    }
    with connection.chunked_cursor() as cursor:
        cursor.execute(_PERIOD_CONTEXTS, params)
        while rows := cursor.fetchmany(_CHUNK):
            for subject_id, at, facts, values, ages in rows:
                yield subject_id, at, _snapshot_of(facts, values, ages)


def labels(key: str, subject_type: str) -> dict[int, bool]:
    """``{subject_id: positive?}`` from the outcome of this rule's latest labelled escalation per subject."""
    from apps.rules.models import Rule

    found: dict[int, bool] = {}
    # Read through the relation escalations declare on the rule (rules import nothing of theirs).
    for rule in Rule.objects.filter(key=key):
        rows = (
            rule.escalations.filter(subject_type=subject_type, outcome__in=POSITIVE + NEGATIVE)
            .order_by("closed_at", "id")
            .values_list("subject_id", "outcome")
        )
        for subject_id, outcome in rows.iterator(chunk_size=_CHUNK):
            found[subject_id] = outcome in POSITIVE  # later rows win
    return found


# --- the replay ----------------------------------------------------------------------------------------


def backtest(
    key: str,
    *,
    draft: RuleSpec | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    file_name: str = "the file",
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Replay ``draft`` (or the live version of ``key``) over the stored contexts of ``[since, until)``;
    see the module docstring. ``progress`` is called with the contexts replayed so far, every chunk."""
    from apps.learning.cases import SHADOW, rule_cases

    if limit < 1:
        raise BacktestError("--limit must be at least 1")
    if draft is not None and draft.key != key:
        raise BacktestError(f"the draft is rule {draft.key!r}, not {key!r}")
    candidate, live = candidates(key, draft, file_name=file_name)
    result = BacktestResult(candidate=candidate, live=live, since=since, until=until, limit=limit)
    comparable = live is not None and live is not candidate and live.subject_type == candidate.subject_type
    matched = Verdict.MATCHED
    for subject_id, at, snapshot in period_contexts(
        candidate.subject_type, since=since, until=until, limit=limit
    ):
        if result.replayed >= limit:
            result.limited = True
            break
        values, ages = context_from_snapshot(snapshot)
        result.replayed += 1
        if progress is not None and result.replayed % _CHUNK == 0:
            progress(result.replayed)
        outcome = candidate.condition.matches(values, ages=ages, max_age=candidate.max_age)
        result.outcomes[outcome.value] += 1
        day = result.timeline.setdefault(at.date(), [0, 0])
        if outcome is matched:
            day[0] += 1
            if len(result.examples) < SAMPLE:
                result.examples.append((subject_id, at, values))
        if not comparable:
            continue
        assert live is not None
        before = live.condition.matches(values, ages=ages, max_age=live.max_age)
        result.live_outcomes[before.value] += 1
        day[1] += before is matched
        if outcome is matched and before is not matched:
            result.newly_matching_count += 1
            if len(result.newly_matching) < SAMPLE and subject_id not in result.newly_matching:
                result.newly_matching.append(subject_id)
        elif before is matched and outcome is not matched:
            result.no_longer_matching_count += 1
            if len(result.no_longer_matching) < SAMPLE and subject_id not in result.no_longer_matching:
                result.no_longer_matching.append(subject_id)
    # Precision and recall on the period's labelled cases, each on the facts it was decided on.
    cases = rule_cases(key, candidate.subject_type, since=since, until=until)
    result.cases = len(cases)
    result.recall_estimable = any(c.source != "escalation" for c in cases)
    for case in cases:
        now = candidate.condition.matches(case.values, ages=case.ages, max_age=candidate.max_age) is matched
        then = (
            live.condition.matches(case.values, ages=case.ages, max_age=live.max_age) is matched
            if comparable and live is not None
            else now
        )
        if case.positive:
            result.caught += case.weight * now
            result.missed += case.weight * (not now)
            result.live_caught += case.weight * then
            result.live_missed += case.weight * (not then)
            result.positives_lost += then and not now and case.source != SHADOW
        if case.source == SHADOW:
            continue
        if now:
            result.precision.positive += case.positive
            result.precision.negative += not case.positive
        if then:
            result.live_precision.positive += case.positive
            result.live_precision.negative += not case.positive
    if live is candidate:
        result.live_outcomes = Counter(result.outcomes)
        result.live_precision = result.precision
        for counts in result.timeline.values():
            counts[1] = counts[0]
    return result
