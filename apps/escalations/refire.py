"""Re-firing open escalations in bulk: what a match of an already open (rule, subject) does.

A nightly run re-matches thousands of subjects whose escalation is already open. Each needs its counter
bumped and its evidence refreshed, and nothing else (no event, no action): one locking SELECT and one
UPDATE per batch instead of four queries per match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from django.db import connection

from apps.bulk import array_literal
from apps.rules.evaluation.services import rows_by_rule_subject

from .models import Escalation

if TYPE_CHECKING:
    from apps.rules.engine.evaluator import Evaluation
    from apps.rules.evaluation.facts import Context
    from apps.rules.models import Decision, RuleVersion

REFIRED = "already open: re-fire counted"


def open_escalations(
    subject_type: str,
    keys: Iterable[tuple[int, int]],
    *,
    lock: bool = False,
    columns: Sequence[str] = ("id", "rule_id", "subject_id", "fire_count"),
) -> dict[tuple[int, int], Escalation]:
    """The open escalations of these (rule id, subject id) pairs (only ``columns`` loaded), locked when
    asked, in key order: concurrent batches lock in one order. One probe of the partial unique index on
    open (rule, subject) per pair."""
    open_states = ", ".join(f"'{state}'" for state in Escalation.OPEN_STATES)
    return rows_by_rule_subject(
        Escalation, subject_type, keys, columns=columns, where=f"t.status IN ({open_states})", lock=lock
    )


Fired = tuple["RuleVersion", "Context", "Evaluation", "Decision"]


def refires_write(refired: Sequence[tuple[Escalation, Decision]], now: dt.datetime) -> None:
    """Bump the counters of open escalations the caller locked, point their evidence at the matches'
    decisions (which must be stored by now) and take their summaries: one UPDATE. A copy stored before
    evidence was kept by reference is emptied: the decision is the evidence now."""
    if not refired:
        return
    if any(decision.pk is None or decision._state.adding for _, decision in refired):
        raise ValueError("a re-fire's evidence is read from its decision: store the decisions first")
    with connection.cursor() as cursor:
        cursor.execute(
            _REFIRE,
            [
                now,
                array_literal(escalation.pk for escalation, _ in refired),
                array_literal(decision.pk for _, decision in refired),
            ],
        )
    for escalation, decision in refired:
        escalation.fire_count += 1
        escalation.last_fired_at = now
        escalation.evidence_decision_id = decision.pk


def escalations_refire(*, subject_type: str, fired: Sequence[Fired], now: dt.datetime) -> list[Fired]:
    """Re-fire the open escalations among ``fired`` matches, whose decisions are stored; return the
    matches that have none. Inside the caller's transaction: the rows stay locked until commit, so a
    concurrent close cannot slip between this read and the update."""
    if not fired:
        return []
    open_now = open_escalations(
        subject_type, [(version.rule_id, context.subject_id) for version, context, *_ in fired], lock=True
    )
    rest: list[Fired] = []
    refired: list[tuple[Escalation, Decision]] = []
    for version, context, evaluation, decision in fired:
        escalation = open_now.get((version.rule_id, context.subject_id))
        if escalation is None:
            rest.append((version, context, evaluation, decision))
            continue
        decision.escalation, decision.suppressed = escalation, REFIRED
        refired.append((escalation, decision))
    refires_write(refired, now)
    return rest


# Table and column names are constants.
_REFIRE = """
    UPDATE escalations_escalation e
       SET fire_count = e.fire_count + 1, last_fired_at = %s, evidence_decision_id = d.id,
           evidence = '{}'::jsonb, summary = d.summary
      FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, decision_id)
      JOIN rules_decision d ON d.id = v.decision_id
     WHERE e.id = v.id
"""
