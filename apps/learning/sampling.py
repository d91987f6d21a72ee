"""The shadow sample: random unflagged subjects, their facts at sampling time, labelled later.

Every stored label comes from a subject a live rule flagged, so without this sample a threshold sweep
could never see what a looser threshold would catch. Each night a few unflagged subjects per subject
type are drawn at random (``ORDER BY random()`` over the live, unflagged rows), their facts computed
with the same query live evaluation uses (``apps.rules.evaluation.facts.compute_contexts``) and stored. Later:

* *positive* (a miss) once an escalation on the subject, opened within the horizon after sampling,
  has been closed as acted on (``actioned`` / ``approved`` / ``rejected``);
* *negative* once the horizon has passed without such an escalation and none is still open.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.rules.evaluation.backtest import POSITIVE
from apps.rules.evaluation.facts import compute_contexts
from apps.rules.models import Rule

from .models import LearningSettings, ShadowSample

SUBJECT_TABLES: Final = {
    "change_order": "entities_changeorder",
    "project": "entities_project",
    "client": "entities_client",
    "submittal": "entities_submittal",
    "document": "entities_document",
}

# Unflagged: no open escalation, and no rule's last outcome on the subject was a match.
_SAMPLE_SQL = """
WITH unflagged AS (
    SELECT t.id FROM {table} t
    WHERE t.deleted_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM escalations_escalation e
                      WHERE e.subject_type = %(subject_type)s AND e.subject_id = t.id
                        AND e.status IN ('open', 'acknowledged'))
      AND NOT EXISTS (SELECT 1 FROM rules_subjectstate s
                      WHERE s.subject_type = %(subject_type)s AND s.subject_id = t.id
                        AND s.last_outcome = 'matched')
)
SELECT id, (SELECT COUNT(*) FROM unflagged) FROM unflagged ORDER BY random() LIMIT %(size)s
"""

# The first escalation acted on within the horizon makes a sample positive.
_LABEL_POSITIVE_SQL = """
UPDATE learning_shadowsample s SET positive = TRUE, labelled_at = %(now)s, escalation_id = hit.escalation_id
FROM (
    SELECT DISTINCT ON (s2.id) s2.id, e.id AS escalation_id
    FROM learning_shadowsample s2
    JOIN escalations_escalation e
      ON e.subject_type = s2.subject_type AND e.subject_id = s2.subject_id
     AND e.opened_at > s2.sampled_at AND e.opened_at <= s2.sampled_at + %(horizon)s
     AND e.outcome = ANY(%(positive)s)
    WHERE s2.positive IS NULL
    ORDER BY s2.id, e.opened_at
) hit
WHERE s.id = hit.id
"""

_LABEL_NEGATIVE_SQL = """
UPDATE learning_shadowsample s SET positive = FALSE, labelled_at = %(now)s
WHERE s.positive IS NULL AND s.sampled_at + %(horizon)s < %(now)s
  AND NOT EXISTS (SELECT 1 FROM escalations_escalation e
                  WHERE e.subject_type = s.subject_type AND e.subject_id = s.subject_id
                    AND e.opened_at > s.sampled_at AND e.opened_at <= s.sampled_at + %(horizon)s
                    AND (e.outcome = ANY(%(positive)s) OR e.status IN ('open', 'acknowledged')))
"""


def sampled_subject_types() -> list[str]:
    """Subject types with at least one enabled, published rule: the only ones a miss can be about."""
    return sorted(
        set(
            Rule.objects.filter(enabled=True, live_version__isnull=False).values_list(
                "subject_type", flat=True
            )
        )
    )


@transaction.atomic
def shadow_sample_take(
    *, subject_type: str, size: int | None = None, now: dt.datetime | None = None
) -> list[ShadowSample]:
    """Store the facts of ``size`` random unflagged subjects of ``subject_type``."""
    now = now or timezone.now()
    size = LearningSettings.load().shadow_sample_size if size is None else size
    if size <= 0:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            _SAMPLE_SQL.format(table=SUBJECT_TABLES[subject_type]),
            {"subject_type": subject_type, "size": size},
        )
        rows = cursor.fetchall()
    if not rows:
        return []
    population = rows[0][1]
    weight = population / len(rows)
    samples = [
        ShadowSample(
            subject_type=subject_type,
            subject_id=context.subject_id,
            sampled_at=now,
            facts=context.snapshot(),
            weight=weight,
        )
        for context in compute_contexts(subject_type, [r[0] for r in rows], now=now)
    ]
    ShadowSample.objects.bulk_create(samples)
    audit_record(
        action="shadow_sample.taken",
        actor="system:learning",
        object_type="shadow_sample",
        object_id=subject_type,
        data={"subjects": len(samples), "population": population, "weight": weight},
    )
    return samples


@transaction.atomic
def shadow_samples_label(*, now: dt.datetime | None = None) -> tuple[int, int]:
    """Label the samples whose answer is known: (newly positive, newly negative)."""
    now = now or timezone.now()
    params: dict[str, Any] = {
        "now": now,
        "horizon": dt.timedelta(days=LearningSettings.load().shadow_horizon_days),
        "positive": list(POSITIVE),
    }
    with connection.cursor() as cursor:
        cursor.execute(_LABEL_POSITIVE_SQL, params)
        positive = cursor.rowcount
        cursor.execute(_LABEL_NEGATIVE_SQL, params)
        negative = cursor.rowcount
    if positive or negative:
        audit_record(
            action="shadow_sample.labelled",
            actor="system:learning",
            object_type="shadow_sample",
            data={"positive": positive, "negative": negative},
        )
    return positive, negative
