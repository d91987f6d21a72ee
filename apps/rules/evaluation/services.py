"""Publishing rules and deciding on subjects: the writes of the rules app.

:func:`decide` evaluates a batch and claims its subject states; :func:`decisions_record` stores the
decisions. The flow around them (which subjects, batches, transactions, acting on matches, the audit
batch) is the pipeline's, ``apps.orchestration.pipeline``; nothing here knows about escalations."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Max, Model
from django.utils import timezone
from psycopg.types.json import Jsonb

from apps.audit.models import canonical_json
from apps.audit.services import Actor, RawJSON, audit_record
from apps.bulk import array_literal, reserve_ids, stored_maker
from apps.rules.engine.durations import parse_duration
from apps.rules.engine.evaluator import CompiledCondition, Evaluation, Verdict, compile_condition
from apps.rules.engine.ruleset import dump_rules, parse_rules, rule_from_dict
from apps.rules.evaluation.facts import Context
from apps.rules.models import Decision, Rule, RuleVersion, SubjectState

M = TypeVar("M", bound=Model)

_ROUTE_RANK = {"executive": 0, "standard": 1}


def _spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


@transaction.atomic
def rule_publish(*, rule: Rule, actor: Actor, evaluate: bool = True) -> RuleVersion:
    """Freeze the rule's draft into a new immutable version and make it live (no-op if unchanged).

    A new version is evaluated over every subject of its type by a worker right after commit
    (:mod:`apps.rules.authoring.publishing`); ``evaluate=False`` leaves that to the caller (``rules_import``
    queues one run per subject type for all the rules it published).
    """
    spec = rule_from_dict(rule.draft).to_dict()
    rule = Rule.objects.select_for_update().get(pk=rule.pk)
    if rule.live_version and rule.live_version.spec_hash == _spec_hash(spec):
        return rule.live_version
    number = (rule.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = RuleVersion.objects.create(
        rule=rule,
        number=number,
        spec=spec,
        spec_hash=_spec_hash(spec),
        published_at=timezone.now(),
        published_by=actor if getattr(actor, "is_authenticated", False) else None,  # type: ignore[misc]
    )
    rule.live_version = version
    rule.name = spec["name"]
    rule.subject_type = spec["subject"]
    rule.save(update_fields=["live_version", "name", "subject_type", "updated_at"])
    audit_record(
        action="rule.published",
        actor=actor,
        object_type="rule",
        object_id=rule.key,
        data={"version": number, "spec": spec},
    )
    if evaluate:
        from apps.rules.authoring.publishing import publish_runs_queue

        publish_runs_queue(versions=[version])
    return version


@transaction.atomic
def rules_import(*, text: str, actor: Actor) -> dict[str, list[str]]:
    """Import a rules file: all or nothing; a changed rule gets a new published version."""
    specs = parse_rules(text)  # raises RulesFileError with every problem and its line
    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
    published: list[RuleVersion] = []
    for spec in specs:
        data = spec.to_dict()
        rule, created = Rule.objects.get_or_create(
            key=spec.key, defaults={"name": spec.name, "subject_type": spec.subject, "draft": data}
        )
        before = rule.live_version_id
        if not created:
            rule.draft = data
            rule.save(update_fields=["draft", "updated_at"])
        version = rule_publish(rule=rule, actor=actor, evaluate=False)
        bucket = "created" if created else ("unchanged" if version.pk == before else "updated")
        report[bucket].append(spec.key)
        if version.pk != before:
            published.append(version)
    from apps.rules.authoring.publishing import publish_runs_queue

    publish_runs_queue(versions=published)
    return report


def rules_export() -> str:
    rules = Rule.objects.filter(live_version__isnull=False).select_related("live_version").order_by("key")
    return dump_rules([rule_from_dict(r.live_version.spec) for r in rules if r.live_version])


# --- evaluation -------------------------------------------------------------------------------------

_compiled: dict[int, tuple[CompiledCondition, dt.timedelta | None]] = {}


def _compiled_for(version: RuleVersion) -> tuple[CompiledCondition, dt.timedelta | None]:
    # Versions are immutable, so compiling once per version id is safe for the life of the process.
    if version.pk not in _compiled:
        max_age = version.spec.get("max_fact_age")
        _compiled[version.pk] = (
            compile_condition(version.spec["when"], version.spec["subject"]),
            parse_duration(max_age) if max_age else None,
        )
    return _compiled[version.pk]


@dataclass
class EvaluationReport:
    subjects: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    escalations_opened: int = 0
    escalations_refired: int = 0
    suppressed: int = 0
    auto_resolved: int = 0

    def __str__(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.subjects} subjects; {outcomes or 'no rules'}; escalations opened "
            f"{self.escalations_opened}, re-fired {self.escalations_refired}, suppressed {self.suppressed}, "
            f"auto-resolved {self.auto_resolved}"
        )


def live_versions(subject_type: str) -> list[RuleVersion]:
    """Published, enabled rules for a subject type, in priority order (lower runs first)."""
    versions = [
        r.live_version
        for r in Rule.objects.filter(
            subject_type=subject_type, enabled=True, live_version__isnull=False
        ).select_related("live_version__rule")
    ]
    return sorted((v for v in versions if v), key=lambda v: (int(v.spec.get("priority", 100)), v.rule.key))


# One probe of an index on (rule, subject) per pair: the LIMIT keeps the planner from turning the lookup
# into a scan of every row of the rule, which it does on statistics taken before a first run filled the
# table (a scan per batch grew to 0.2 s at 100k states). Table, columns and condition are code constants.
_BY_RULE_SUBJECT = """
    SELECT t.* FROM unnest(%(rules)s::bigint[], %(subjects)s::bigint[]) AS k(rule_id, subject_id)
    CROSS JOIN LATERAL (
        SELECT {columns} FROM {table} t
         WHERE t.rule_id = k.rule_id AND t.subject_type = %(subject_type)s AND t.subject_id = k.subject_id
               {where}
         LIMIT 1 {lock}
    ) t
"""


def _by_rule_subject(
    table: str,
    subject_type: str,
    keys: Iterable[tuple[int, int]],
    columns: Sequence[str],
    where: str,
    lock: bool,
) -> tuple[str, dict[str, Any]] | None:
    """The query of :func:`rows_by_rule_subject` and its parameters (None: no pairs)."""
    pairs = sorted(set(keys))
    if not pairs:
        return None
    params = {
        "rules": array_literal(rule for rule, _ in pairs),
        "subjects": array_literal(subject for _, subject in pairs),
        "subject_type": subject_type,
    }
    query = _BY_RULE_SUBJECT.format(
        columns=", ".join(columns),
        table=table,
        where=f"AND {where}" if where else "",
        lock="FOR UPDATE" if lock else "",
    )
    return query, params


def rows_by_rule_subject(
    model: type[M],
    subject_type: str,
    keys: Iterable[tuple[int, int]],
    *,
    columns: Sequence[str] = ("*",),
    where: str = "",
    lock: bool = False,
) -> dict[tuple[int, int], M]:
    """The row of ``model`` (keyed by rule, subject type and subject) for each (rule id, subject id) pair
    that has one, ``where`` it holds; locked when asked, in key order (concurrent batches lock in one
    order)."""
    built = _by_rule_subject(model._meta.db_table, subject_type, keys, columns, where, lock)
    if built is None:
        return {}
    if not _plain_columns(model, columns):
        return {(row.rule_id, row.subject_id): row for row in model.objects.raw(*built)}  # type: ignore[attr-defined]
    # Named columns the database returns as Python values: instances made from the rows directly, the
    # other fields deferred as ``raw()`` leaves them. ``raw()`` maps each row through ``Model.__init__``,
    # which cost more than the locking query itself for a warm run's 11,816 re-fires.
    make = stored_maker(model, connection.alias)
    with connection.cursor() as cursor:
        cursor.execute(*built)
        names = [column.name for column in cursor.description]
        rows = [make(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]
    return {(row.rule_id, row.subject_id): row for row in rows}  # type: ignore[attr-defined]


def _plain_columns(model: type[Model], columns: Sequence[str]) -> bool:
    """Whether every one of ``columns`` is a field's column stored under its attribute name with no
    conversion on reading (``from_db_value``): such rows become instances without the ORM's mapping."""
    if "*" in columns:
        return False
    fields = {field.column: field for field in model._meta.concrete_fields}
    return all(
        name in fields and fields[name].attname == name and not hasattr(fields[name], "from_db_value")
        for name in columns
    )


def state_cooldowns(
    subject_type: str, keys: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], dt.datetime | None]:
    """The cooldown end of the subject state of each of these (rule id, subject id) pairs that has one:
    values, not a model instance per state (opening asks it of every match it claims)."""
    built = _by_rule_subject(
        SubjectState._meta.db_table,
        subject_type,
        keys,
        ("rule_id", "subject_id", "cooldown_until"),
        "",
        False,
    )
    if built is None:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(*built)
        return {(rule, subject): until for rule, subject, until in cursor.fetchall()}


# Binary COPY: the server takes each field by its length instead of scanning every byte of the facts and
# traces (~3.5 kB a traced decision) for delimiters and escapes, and the client does not escape them.
# Measured alone on a first run's 33.5k decisions (3 pairs): server CPU 1.85-2.06 -> 1.56-1.85 s,
# client 0.24-0.31 -> 0.13-0.16 s. A jsonb field in binary is its JSON text after a version byte,
# which psycopg's jsonb dumper adds (``jsonb_text``).
_DECISION_COPY_FULL = (
    "COPY rules_decision (id, rule_version_id, subject_type, subject_id, outcome, trigger, evaluated_at, "
    "facts, explanation, summary, suppressed, escalation_id) FROM STDIN (FORMAT BINARY)"
)
_DECISION_COPY_TYPES = (
    "int8", "int8", "text", "int8", "text", "text", "timestamptz", "jsonb", "jsonb", "text", "text", "int8"
)  # fmt: skip


def _as_is(data: bytes) -> bytes:
    return data


def jsonb_text(text: str | bytes) -> Jsonb:
    """JSON text already encoded (str, or UTF-8 bytes), as a jsonb field (psycopg's dumper writes it as it
    is)."""
    return Jsonb(text.encode() if isinstance(text, str) else text, dumps=_as_is)


_django_default = DjangoJSONEncoder().default
_explain_stdlib = json.JSONEncoder(separators=(",", ":"), default=_django_default).encode


def explanation_jsonb(trace: dict[str, Any]) -> Jsonb:
    """A decision's trace (``Evaluation.to_json``) as its row's jsonb.

    Written by orjson: the standard library's encoder was a fifth of ``decisions_record``'s CPU, and
    this text is only ever read back as jsonb (nothing hashes it), so its spelling does not matter,
    only its value. Datetimes go through Django's encoder as before (``OPT_PASSTHROUGH_DATETIME``), as
    do Decimals. What orjson refuses (an integer past 64 bits, a key that is not a str) is written by
    the standard library's encoder, as it always was. A float NaN or infinity, which jsonb refuses (the
    standard encoder wrote it anyway and the batch's COPY failed), is written as null.
    """
    try:
        return jsonb_text(
            orjson.dumps(trace, default=_django_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
        )
    except orjson.JSONEncodeError:
        return jsonb_text(_explain_stdlib(trace))


@contextmanager
def decisions_copy(cursor: Any) -> Iterator[Any]:
    """The COPY decisions stream into (``cursor``: Django's), binary with its column types set: rows are
    ``(id, rule_version_id, subject_type, subject_id, outcome, trigger, evaluated_at, facts, explanation,
    summary, suppressed, escalation_id)``, the JSON fields as :func:`jsonb_text` or None."""
    with cursor.cursor.copy(_DECISION_COPY_FULL) as copy:
        copy.set_types(_DECISION_COPY_TYPES)
        yield copy


# The batch's claim on its subjects: one statement, rows in key order, that locks every (rule, subject)
# state of the batch, inserting the missing ones with their new outcome. Taking them all at once, in
# one order, is what keeps concurrent evaluations of the same subject from deadlocking (a lock on the
# existing rows first and an upsert of the new ones later took them in two passes). An existing row
# keeps its outcome here and returns it: the prior outcome decides what is traced. ``xmax = 0`` tells
# a row this statement inserted from one it updated (PostgreSQL's usual upsert idiom; an updated row
# carries this transaction's id).
_CLAIM_STATES = """
    INSERT INTO rules_subjectstate (rule_id, subject_type, subject_id, last_outcome, last_evaluated_at,
                                    snooze_reason)
    SELECT v.rule_id, %(subject_type)s, v.subject_id, v.last_outcome, %(now)s, ''
      FROM unnest(%(rules)s::bigint[], %(subjects)s::bigint[], %(outcomes)s::text[]) WITH ORDINALITY
        AS v(rule_id, subject_id, last_outcome, position)
     ORDER BY v.position
    ON CONFLICT (rule_id, subject_type, subject_id)
    DO UPDATE SET last_evaluated_at = EXCLUDED.last_evaluated_at
    RETURNING rule_id, subject_id, xmax = 0, last_outcome, snoozed_until, snooze_reason
"""

_SET_OUTCOMES = """
    UPDATE rules_subjectstate s SET last_outcome = v.last_outcome
      FROM unnest(%(rules)s::bigint[], %(subjects)s::bigint[], %(outcomes)s::text[])
        AS v(rule_id, subject_id, last_outcome)
     WHERE s.rule_id = v.rule_id AND s.subject_type = %(subject_type)s AND s.subject_id = v.subject_id
"""


@dataclass(slots=True)
class _Prior:
    """A subject state as the batch found it (None outcome: the batch created it, and the pair, never
    decided before, counts as not matched)."""

    last_outcome: str | None
    snoozed_until: dt.datetime | None
    snooze_reason: str


def _columns(rows: Sequence[tuple[int, int, str]]) -> dict[str, str]:
    # Ids and outcome words (no quote, comma, brace or space): array literals, not lists adapted per element.
    rules, subjects, outcomes = zip(*rows, strict=True)
    return {
        "rules": array_literal(rules),
        "subjects": array_literal(subjects),
        "outcomes": array_literal(outcomes),
    }


def _claim_states(
    subject_type: str, now: dt.datetime, outcomes: dict[tuple[int, int], str]
) -> dict[tuple[int, int], _Prior]:
    """Lock (creating them with their outcome) the states of these (rule, subject) pairs; return
    them as they were. ``last_evaluated_at`` is set to ``now`` on every one."""
    rows = sorted((rule, subject, outcome) for (rule, subject), outcome in outcomes.items())
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_STATES, {"subject_type": subject_type, "now": now, **_columns(rows)})
        return {
            (rule, subject): _Prior(None if created else outcome, snoozed_until, reason)
            for rule, subject, created, outcome, snoozed_until, reason in cursor.fetchall()
        }


def _set_outcomes(subject_type: str, changed: Sequence[tuple[int, int, str]]) -> None:
    """Record the new outcome of states that existed with another one (rows the claim locked)."""
    if changed:
        with connection.cursor() as cursor:
            cursor.execute(_SET_OUTCOMES, {"subject_type": subject_type, **_columns(changed)})


@dataclass(slots=True)
class Decided:
    """A batch decided: each subject's evaluations and what the rules make of its matches. Only the
    subject states are written (claimed and locked until the batch commits); nothing else yet."""

    subject_type: str
    evaluated: list[tuple[Context, list[tuple[RuleVersion, Evaluation]]]]
    states: dict[tuple[int, int], _Prior]
    # Matches a higher route or a snooze holds back: (rule id, subject id) → the reason, in words.
    suppressed: dict[tuple[int, int], str]
    # Matches that act: neither inhibited by a higher route nor snoozed.
    acting: list[tuple[int, int]]


def decide(
    contexts: list[Context],
    versions: list[RuleVersion],
    now: dt.datetime,
    report: EvaluationReport,
    pairs: dict[int, frozenset[int]] | None = None,
) -> Decided:
    """Evaluate every rule on each context (in a bulk run only the ``pairs`` it left to trace,
    ``{subject id: rule ids}``), claim the subject states with the outcomes, and say which matches act.

    Pure evaluation and the rules' own decision (route inhibition, snoozes): nothing about what acting
    means. Call inside the batch's transaction (the states stay locked until it commits)."""
    subject_type = contexts[0].subject_type
    compiled = [(version, *_compiled_for(version)) for version in versions]
    # Outcomes depend on the context alone: evaluate first, then claim the states with them.
    evaluated = [
        (
            context,
            [
                (version, condition.evaluate(context.values, ages=context.ages, max_age=max_age))
                for version, condition, max_age in compiled
                if pairs is None or version.rule_id in pairs[context.subject_id]
            ],
        )
        for context in contexts
    ]
    states = _claim_states(
        subject_type,
        now,
        {
            (version.rule_id, context.subject_id): str(evaluation.outcome.value)
            for context, evaluations in evaluated
            for version, evaluation in evaluations
        },
    )
    suppressed: dict[tuple[int, int], str] = {}
    acting: list[tuple[int, int]] = []
    for context, evaluations in evaluated:
        matches = [version for version, evaluation in evaluations if evaluation.outcome == Verdict.MATCHED]
        # The highest route among the subject's matches, whatever the rules' priority numbers: an
        # executive match inhibits every standard one (DMN-style; Alertmanager inhibition). Priority only
        # orders rules within a route (the first in priority order is named as the inhibitor).
        best = min((_ROUTE_RANK.get(version.route, 1) for version in matches), default=None)
        inhibitor = next((v.rule.key for v in matches if _ROUTE_RANK.get(v.route, 1) == best), "")
        for version in matches:
            key = (version.rule_id, context.subject_id)
            state = states[key]
            if _ROUTE_RANK.get(version.route, 1) != best:
                suppressed[key] = f"suppressed by higher route rule {inhibitor}"
            elif state.snoozed_until and state.snoozed_until > now:
                until = timezone.localtime(state.snoozed_until)
                suppressed[key] = f"snoozed until {until:%Y-%m-%d %H:%M %Z} ({state.snooze_reason})"
            else:
                acting.append(key)
    report.suppressed += len(suppressed)
    return Decided(subject_type, evaluated, states, suppressed, acting)


# A match's decision, given the escalation it is filed under when the caller already knows it
# ((rule id, subject id) → (escalation id, reason shown as ``suppressed``)).
Links = dict[tuple[int, int], tuple[int, str]]


@dataclass(slots=True)
class Recorded:
    """The decisions of a batch, stored."""

    # Every match's decision (acting or held back), in evaluation order.
    matched: list[Decision]
    # Acting matches without a link: each still needs its escalation (version, context, evaluation, decision).
    unlinked: list[tuple[RuleVersion, Context, Evaluation, Decision]]
    # Acting matches the caller linked: (rule id, subject id) → decision.
    linked: dict[tuple[int, int], Decision]
    # Per rule whose spec auto-resolves: the subjects it no longer matches.
    not_matched: dict[int, list[int]]
    # The matches' audit entries, saying what the decisions said when stored.
    audit: list[dict[str, Any]]


def decisions_record(
    decided: Decided,
    *,
    trigger: str,
    now: dt.datetime,
    report: EvaluationReport,
    links: Links,
    opening: dict[tuple[int, int], int] | None = None,
    pairs: dict[int, frozenset[int]] | None = None,
) -> Recorded:
    """Store every decision of the batch (one COPY) and the states' changed outcomes.

    A match in ``links`` is filed under that escalation with that reason; the other acting matches come
    back ``unlinked``, each stored pointing at the escalation id ``opening`` gives for it, if any (the
    id the caller will open it under; no reason yet). Decision records only: what an escalation does
    with them is the caller's."""
    subject_type, evaluated, states, suppressed = (
        decided.subject_type,
        decided.evaluated,
        decided.states,
        decided.suppressed,
    )
    acting = set(decided.acting)
    matched: list[Decision] = []
    matched_facts: list[RawJSON] = []  # each match's facts as its decision row holds them
    unlinked: list[tuple[RuleVersion, Context, Evaluation, Decision]] = []
    linked: dict[tuple[int, int], Decision] = {}
    not_matched: dict[int, list[int]] = defaultdict(list)
    changed_states: list[tuple[int, int, str]] = []
    outcomes = report.outcomes
    make_decision = stored_maker(Decision, connection.alias)
    with connection.cursor() as cursor:
        ids = iter(reserve_ids("rules_decision", sum(len(evaluations) for _, evaluations in evaluated)))
        # The decisions stream into PostgreSQL while the rest of the batch is evaluated: it parses their
        # traces on the other core.
        with decisions_copy(cursor) as copy:
            for context, evaluations in evaluated:
                report.subjects += pairs is None
                # The context's facts, once per subject whatever the number of its traced pairs.
                snapshot_json: RawJSON | None = None
                snapshot_field: Jsonb | None = None
                for version, evaluation in evaluations:
                    pk = next(ids)
                    outcome = str(evaluation.outcome.value)
                    if pairs is None:
                        outcomes[outcome] += 1
                    key = (version.rule_id, context.subject_id)
                    state = states[key]
                    if state.last_outcome is not None and state.last_outcome != outcome:
                        changed_states.append((version.rule_id, context.subject_id, outcome))
                    if evaluation.outcome != Verdict.MATCHED:
                        if (state.last_outcome or Verdict.NOT_MATCHED.value) != outcome:
                            # A change of outcome keeps its trace (a pair never decided before was
                            # not matched).
                            if snapshot_json is None:
                                snapshot_json = context.snapshot_json()
                                snapshot_field = jsonb_text(snapshot_json)
                            trace = evaluation.to_json()
                            facts, explanation, summary = (
                                snapshot_field,
                                explanation_jsonb(trace),
                                trace["summary"],
                            )
                        else:
                            facts, explanation, summary = None, None, ""
                        copy.write_row(
                            (pk, version.pk, subject_type, context.subject_id, outcome, trigger, now, facts,
                             explanation, summary, "", None)
                        )  # fmt: skip
                        if evaluation.outcome == Verdict.NOT_MATCHED and version.spec.get(
                            "auto_resolve", True
                        ):
                            not_matched[version.rule_id].append(context.subject_id)
                        continue
                    trace = evaluation.to_json()
                    if snapshot_json is None:
                        snapshot_json = context.snapshot_json()
                        snapshot_field = jsonb_text(snapshot_json)
                    decision = make_decision(
                        rule_version_id=version.pk,
                        escalation_id=None,
                        id=pk,
                        subject_type=subject_type,
                        subject_id=context.subject_id,
                        outcome=outcome,
                        trigger=trigger,
                        evaluated_at=now,
                        explanation=trace,
                        summary=trace["summary"],
                        suppressed=suppressed.get(key, ""),
                    )
                    # The facts stay deferred (read from the row if asked for): nothing acting on a
                    # match reads them from the instance, and building the snapshot's dict for every
                    # subject cost as much as its JSON text.
                    decision.__dict__.pop("facts", None)
                    decision._state.fields_cache["rule_version"] = version
                    link = links.get(key)
                    if link is not None:
                        decision.escalation_id, decision.suppressed = link
                        linked[key] = decision
                    elif key in acting:
                        if opening:
                            decision.escalation_id = opening.get(key)
                        unlinked.append((version, context, evaluation, decision))
                    copy.write_row(
                        (pk, version.pk, subject_type, context.subject_id, outcome, trigger, now,
                         snapshot_field, explanation_jsonb(trace), decision.summary, decision.suppressed,
                         decision.escalation_id)
                    )  # fmt: skip
                    matched.append(decision)
                    matched_facts.append(snapshot_json)
    _set_outcomes(subject_type, changed_states)
    # The entries say what the decisions said when stored (acting on them may add a reason afterwards);
    # their facts are the decision rows' text, which is canonical JSON (Context.snapshot_json).
    audit = [
        {
            "action": "decision.matched",
            "object_type": "decision",
            "object_id": d.pk,
            "data": {
                "rule": d.rule_version.rule.key,
                "version": d.rule_version.number,
                "subject": f"{d.subject_type}:{d.subject_id}",
                "summary": d.summary,
                "facts": facts,
                "suppressed": d.suppressed,
                "trigger": d.trigger,
            },
        }
        for d, facts in zip(matched, matched_facts, strict=True)
    ]
    return Recorded(matched, unlinked, linked, dict(not_matched), audit)
