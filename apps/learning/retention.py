"""Retention: prune heavy decision payloads, keep slim decision rows forever (ANCHORS, Audit and learning 5).

A decision's heavy part is ``facts`` (every input with its age and source) and ``explanation`` (the
per-condition trace); both columns are nullable, and null is what a slim repeat decision already
stores, so pruning sets them to NULL and needs no change to the rules app. Everything else stays: the
outcome, rule version, subject, trigger, time, one-line summary, suppression reason and escalation.

The newest payload per subject is kept whatever its age: backtests and threshold sweeps replay exactly
that context, and a subject nobody touched for months would otherwise drop out of them. So is the payload
of a decision that opened an escalation: it is the evidence the escalation opened on (learning's cases
read it), and of the decision an escalation last fired on: it is the escalation's current evidence. Audit
entries are never touched (they are append-only in the database anyway).

Bulk evaluation runs older than the retention age lose their list of subjects the same way (a nightly
run's is 100k ids); their per-rule counts stay.

Pruning runs in batches of ``batch`` rows so one nightly run never holds long row locks.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import audit_record

from .models import LearningSettings

_PRUNE_SQL = """
UPDATE rules_decision SET facts = NULL, explanation = NULL
WHERE id IN (
    SELECT d.id FROM rules_decision d
    WHERE d.evaluated_at < %(cutoff)s
      AND (d.facts IS NOT NULL OR d.explanation IS NOT NULL)
      AND EXISTS (
          SELECT 1 FROM rules_decision newer
          WHERE newer.subject_type = d.subject_type AND newer.subject_id = d.subject_id
            AND newer.facts IS NOT NULL
            AND (newer.evaluated_at, newer.id) > (d.evaluated_at, d.id)
      )
      AND NOT EXISTS (  -- through the escalation's primary key: its decisions are not indexed
          SELECT 1 FROM escalations_escalation e
          WHERE e.id = d.escalation_id AND d.id IN (e.opened_decision_id, e.evidence_decision_id)
      )
    LIMIT %(batch)s
)
"""


_PRUNE_RUNS_SQL = """
UPDATE rules_evaluationrun SET subject_ids = '{}'
WHERE evaluated_at < %(cutoff)s AND cardinality(subject_ids) > 0
"""


def decisions_prune(*, now: dt.datetime | None = None, batch: int = 10_000) -> int:
    """Null the payloads of decisions older than the retention age (returns how many) and empty the
    subject lists of older bulk runs."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=LearningSettings.load().retention_days)
    total = 0
    while True:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(_PRUNE_SQL, {"cutoff": cutoff, "batch": batch})
                pruned = cursor.rowcount
            if pruned:
                audit_record(
                    action="decisions.pruned",
                    actor="system:learning",
                    object_type="decision",
                    data={"rows": pruned, "older_than": cutoff.isoformat()},
                )
        total += pruned
        if pruned < batch:
            break
    with connection.cursor() as cursor:
        cursor.execute(_PRUNE_RUNS_SQL, {"cutoff": cutoff})
    return total
