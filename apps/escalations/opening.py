"""Opening escalations for many matches at once: the set-based path behind every rule match.

The first run of a new rule can match thousands of subjects with no open escalation. Each one needs its
escalation row, its subject's label, project and client, the "opened" event and its audit entry, the
frozen policy, the cooldown, its decision pointing at it and the outbox rows of its actions through the
noise controls. Here each of those is one statement for the whole batch, not ~17 per match;
A single match (one subject's evaluation) takes the same path with a batch of one.

The claim is one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` against the partial unique index on
open (rule, subject): a row that another transaction opened first is not inserted (the INSERT waits for
that transaction, as a single INSERT hitting the index would), and its match becomes a re-fire of that
escalation in the next round.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import audit_append_many
from apps.bulk import array_literal, reserve_ids
from apps.rules.engine.durations import parse_duration
from apps.rules.evaluation.services import state_cooldowns

from .models import Escalation
from .noise import notify_many
from .policies import policies_freeze
from .refire import Fired, escalations_refire
from .services import EventSpec, _events, actions_plan, subjects_parties

if TYPE_CHECKING:
    from apps.rules.models import Decision

OPENED, REFIRED_RESULT, COOLDOWN = "opened", "refired", "cooldown"

_CLAIM_FIELDS = {
    "id": "bigint",
    "rule_id": "bigint",
    "rule_version_id": "bigint",
    "subject_id": "bigint",
    "subject_label": "text",
    "client_id": "bigint",
    "project_id": "bigint",
    "route": "text",
    "severity": "text",
    "priority": "integer",
    "policy_id": "bigint",
    "policy_snapshot": "jsonb",
    "next_step_at": "timestamptz",
    "step_token": "uuid",
}
# Built from the constant names above only; the rows travel as one bound JSON parameter, in the order
# the ids are to be drawn. The summary comes from the match's stored decision, which the row keeps as its
# opening decision and as its evidence decision (its evidence is read from there, not copied); the row's
# other columns take the values a new escalation has.
# The narrow rows are sorted before the joins, whose nested loops keep that order: sorted after them, the
# rows carried their evidence (11,816 of a cold bench run: a 94 MB sort spilled to disk).
_CLAIM = f"""
    INSERT INTO escalations_escalation (
        {", ".join(_CLAIM_FIELDS)}, summary, evidence, evidence_decision_id, opened_decision_id,
        opened_evidence, subject_type, status, outcome, fire_count, opened_at, last_fired_at, policy_step,
        policy_level, policy_reminders)
    SELECT {", ".join(f"v.{name}" for name in _CLAIM_FIELDS)}, d.summary, '{{}}'::jsonb, d.id, d.id,
           '{{}}'::jsonb, %(subject_type)s, 'open', '', 1, %(now)s, %(now)s, 0, 0, 0
      FROM (SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb)
              AS r({", ".join(f"{name} {kind}" for name, kind in _CLAIM_FIELDS.items())}, decision_id bigint,
                   position bigint)
             ORDER BY r.position) v
      JOIN rules_decision d ON d.id = v.decision_id
     ORDER BY v.position
    ON CONFLICT (rule_id, subject_type, subject_id) WHERE status IN ('open', 'acknowledged') DO NOTHING
    RETURNING id, rule_id, subject_id
"""  # noqa: S608

_COOLDOWNS = """
    UPDATE rules_subjectstate s SET cooldown_until = v.until
      FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS v(rule_id, subject_id, until)
     WHERE s.rule_id = v.rule_id AND s.subject_type = %s AND s.subject_id = v.subject_id
"""

_DECISIONS = """
    UPDATE rules_decision d SET escalation_id = v.escalation_id, suppressed = v.suppressed
      FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(id, escalation_id, suppressed)
     WHERE d.id = v.id
"""


@transaction.atomic
def escalations_fire(*, subject_type: str, fired: Sequence[Fired], now: dt.datetime) -> list[str]:
    """:func:`escalations_open`, recording its audit entries at once (a caller outside the pipeline)."""
    results, entries = escalations_open(subject_type=subject_type, fired=fired, now=now)
    audit_append_many(entries, actor="system:rules")
    return results


@transaction.atomic
def escalations_open(
    *,
    subject_type: str,
    fired: Sequence[Fired],
    now: dt.datetime,
    reserved: Mapping[tuple[int, int], int] | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Open an escalation for each match, or bump the open one; per match: opened / refired / cooldown,
    and the audit entries (actor ``system:rules``), unrecorded.

    The same rows, events, audit entries and outbox rows as opening them one at a time in this order
    (the hourly cap sees the rows queued for earlier matches). Each decision gets its escalation and
    suppression reason; those already stored are updated in one statement.

    The entries are for the caller to append at the end of its transaction: the chain's lock is held
    until commit, so a transaction that took it and then waited for a row lock (a state, an open
    escalation, a claim) could deadlock with the holder of that row waiting for the chain.

    ``reserved``: the id drawn for the escalation of a (rule, subject), which its decision was stored
    pointing at (the pipeline stores a batch's decisions before opening: the foreign key is checked at
    commit). A claim that wins opens the escalation under that id, and its decision needs no update; a
    match held in cooldown, or whose claim another transaction won, has its decision corrected like any
    other stored decision whose escalation or reason changed here.
    """
    results = [""] * len(fired)
    opened: dict[int, Escalation] = {}
    pending = list(range(len(fired)))
    # What the stored decisions say now: only those that change here are written again.
    stored = [decision for *_, decision in fired if decision.pk is not None and not decision._state.adding]
    as_stored = {id(decision): (decision.escalation_id, decision.suppressed) for decision in stored}
    ids = dict(reserved or {})
    while pending:
        pending = _round(subject_type, fired, pending, now, results, opened, ids)
    order = sorted(opened)
    entries = _after_opening(subject_type, [(fired[i], opened[i]) for i in order], now)
    _store_decisions([d for d in stored if (d.escalation_id, d.suppressed) != as_stored[id(d)]])
    return results, entries


def _round(
    subject_type: str,
    fired: Sequence[Fired],
    pending: list[int],
    now: dt.datetime,
    results: list[str],
    opened: dict[int, Escalation],
    reserved: dict[tuple[int, int], int],
) -> list[int]:
    """One pass over the pending matches: re-fire those with an open escalation, hold those in
    cooldown, claim the rest (under the id ``reserved`` for the pair, used once). Returns the matches
    to look at again: a claim another transaction won, a second match of the same (rule, subject)."""
    # The open ones are re-fired and stay locked until commit, as in the batch path's re-fire.
    rest = escalations_refire(subject_type=subject_type, fired=[fired[i] for i in pending], now=now)
    unopened = {id(decision) for *_, decision in rest}
    candidates = []
    for i in pending:
        if id(fired[i][3]) in unopened:
            candidates.append(i)
        else:
            results[i] = REFIRED_RESULT
    if not candidates:
        return []
    cooldowns = _cooldowns(subject_type, [fired[i] for i in candidates])
    claims: list[int] = []
    again: list[int] = []
    seen: set[tuple[int, int]] = set()
    for i in candidates:
        version, context, _evaluation, decision = fired[i]
        key = (version.rule_id, context.subject_id)
        until = cooldowns.get(key)
        if until and until > now:
            decision.suppressed = f"cooldown until {timezone.localtime(until):%Y-%m-%d %H:%M %Z}"
            decision.escalation = None  # none opens (its decision may point at the id reserved for it)
            results[i] = COOLDOWN
        elif key in seen:
            again.append(i)  # the first match of the pair opens it; this one re-fires it next round
        else:
            seen.add(key)
            claims.append(i)
    if not claims:
        return again
    parties = subjects_parties(subject_type, [fired[i][1].subject_id for i in claims])
    escalations = []
    for i in claims:
        version, context, _evaluation, decision = fired[i]
        label, project, client = parties[context.subject_id]
        escalations.append(
            Escalation(
                id=reserved.pop((version.rule_id, context.subject_id), None),
                rule_id=version.rule_id,
                rule_version=version,
                subject_type=subject_type,
                subject_id=context.subject_id,
                subject_label=label[:300],
                client=client,
                project=project,
                route=version.route,
                severity=version.spec.get("severity", "medium"),
                priority=int(version.spec.get("priority", 100)),
                summary=decision.summary,
                opened_at=now,
                last_fired_at=now,
            )
        )
    # The policy is frozen before the first actions: its digest setting decides how they go out.
    policies_freeze(escalations)
    _claim(subject_type, escalations, [fired[i][3] for i in claims], now)
    for i, escalation in zip(claims, escalations, strict=True):
        if escalation.pk is None:
            again.append(i)  # another transaction opened it first: a re-fire, next round
        else:
            fired[i][3].escalation = escalation
            results[i] = OPENED
            opened[i] = escalation
    return sorted(again)


def _after_opening(
    subject_type: str, items: list[tuple[Fired, Escalation]], now: dt.datetime
) -> list[dict[str, Any]]:
    """Cooldowns, the "opened" events, and the actions' outbox rows; the events' audit entries."""
    if not items:
        return []
    until: dict[int, dt.datetime] = {}  # per rule version: its cooldown's end
    for (version, *_), _e in items:
        if version.pk not in until:
            until[version.pk] = now + parse_duration(version.spec.get("cooldown", "7d"))
    with connection.cursor() as cursor:
        cursor.execute(
            _COOLDOWNS,
            [
                array_literal(version.rule_id for (version, *_), _e in items),
                array_literal(context.subject_id for (_v, context, *_), _e in items),
                [until[version.pk] for (version, *_), _e in items],
                subject_type,
            ],
        )
    planned = actions_plan([(escalation, version.actions) for (version, *_), escalation in items])
    events: list[EventSpec] = []
    for ((version, *_), escalation), (_notices, skipped) in zip(items, planned, strict=True):
        data = {"rule": version.rule.key, "version": version.number, "route": escalation.route}
        events.append((escalation, "opened", "", now, data))
        events.extend(skipped)
    entries = _events(events, "system:rules", "system", defer_audit=True)
    # Emails to people pass the noise controls (digest, quiet hours, hourly cap); the rest go straight out.
    notify_many(
        items=[(escalation, notices) for (_, escalation), (notices, _) in zip(items, planned, strict=True)],
        now=now,
        new=True,
    )
    return entries


def _store_decisions(stored: list[Decision]) -> None:
    """Write the escalation and suppression reason of these stored decisions (the batch path stores
    them before opening; a decision not stored yet carries them into its INSERT)."""
    if not stored:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _DECISIONS,
            # A decision held back (cooldown) has no escalation: NULL, which array_literal does not write.
            [
                array_literal(d.pk for d in stored),
                [d.escalation_id for d in stored],
                [d.suppressed for d in stored],
            ],
        )


def _cooldowns(subject_type: str, items: Sequence[Fired]) -> dict[tuple[int, int], dt.datetime | None]:
    return state_cooldowns(
        subject_type, [(version.rule_id, context.subject_id) for version, context, *_ in items]
    )


def _claim(
    subject_type: str, escalations: list[Escalation], decisions: list[Decision], now: dt.datetime
) -> None:
    """Insert the escalations nobody opened meanwhile and set their primary keys (None: lost). Each
    goes in under its own id if it has one (reserved by the caller), else under one drawn here.

    Their summary and evidence are their decisions', which must be stored and become their opening and
    evidence decisions (the instances get their ids)."""
    if any(decision.pk is None or decision._state.adding for decision in decisions):
        raise ValueError("an escalation's evidence is read from its decision: store the decisions first")
    unnumbered = [e for e in escalations if e.pk is None]
    for e, pk in zip(unnumbered, reserve_ids(Escalation._meta.db_table, len(unnumbered)), strict=True):
        e.pk = pk
    rows: list[dict[str, Any]] = []
    for position, (e, decision) in enumerate(zip(escalations, decisions, strict=True)):
        rows.append(
            {
                "id": e.pk,
                "rule_id": e.rule_id,
                "rule_version_id": e.rule_version_id,
                "subject_id": e.subject_id,
                "subject_label": e.subject_label,
                "client_id": e.client_id,
                "project_id": e.project_id,
                "route": e.route,
                "severity": e.severity,
                "priority": e.priority,
                "policy_id": e.policy_id,
                "policy_snapshot": e.policy_snapshot,
                # isoformat() keeps the microseconds (DjangoJSONEncoder would cut them to milliseconds).
                "next_step_at": e.next_step_at.isoformat() if e.next_step_at else None,
                "step_token": str(e.step_token) if e.step_token else None,
                "decision_id": decision.pk,
                "position": position,
            }
        )
    document = json.dumps(rows, cls=DjangoJSONEncoder)
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, {"subject_type": subject_type, "now": now, "rows": document})
        ids = {pk for pk, _rule_id, _subject_id in cursor.fetchall()}
    for e, decision in zip(escalations, decisions, strict=True):
        if e.pk not in ids:
            e.pk = None  # lost: its id stays unused
        else:
            e._state.adding, e._state.db = False, connection.alias
            # The id only: the decision will point at the escalation, and a cycle of 12k pairs waits
            # for the garbage collector.
            e.opened_decision_id = e.evidence_decision_id = decision.pk  # the copies stay empty, as built
