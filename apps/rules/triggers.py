"""What to re-evaluate when entities change: each change marks the subjects that depend on it."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from functools import cache
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from redis.exceptions import RedisError

from apps.entities.models import ChangeOrder, Project, Submittal

SUBJECTS = ("change_order", "project", "client", "submittal")


def affected_subjects(changes: dict[str, set[int]]) -> dict[str, set[int]]:
    """Map changed entity ids to the subjects whose facts read them (coalesced per call)."""
    projects = set(changes.get("project", set()))
    clients = set(changes.get("client", set()))
    # Money, milestones and change orders are project facts; milestones also feed client facts.
    for entity, model in (
        ("financial_line", "money"),
        ("milestone", "milestones"),
        ("change_order", "change_orders"),
    ):
        if ids := changes.get(entity):
            projects |= set(Project.objects.filter(**{f"{model}__id__in": ids}).values_list("id", flat=True))
    if projects:
        clients |= set(
            Project.objects.filter(id__in=projects, client__isnull=False).values_list("client_id", flat=True)
        )
    if clients:
        projects |= set(Project.objects.filter(client_id__in=clients).values_list("id", flat=True))
    change_orders = set(changes.get("change_order", set()))
    change_orders |= set(ChangeOrder.objects.filter(project_id__in=projects).values_list("id", flat=True))
    submittals = set(changes.get("submittal", set()))
    submittals |= set(Submittal.objects.filter(project_id__in=projects).values_list("id", flat=True))
    if vendors := changes.get("vendor"):
        submittals |= set(Submittal.objects.filter(vendor_id__in=vendors).values_list("id", flat=True))
    return {"change_order": change_orders, "project": projects, "client": clients, "submittal": submittals}


def on_entities_changed(changes: dict[str, set[int]], trigger: str = "sync") -> dict[str, int]:
    """Mark the affected subjects for evaluation, in the caller's transaction, and make sure a flush runs.

    Marks coalesce: a subject already waiting is not queued twice, so a burst of webhook deliveries about
    one client becomes one evaluation of each dependent subject when the burst's window closes.
    """
    affected = affected_subjects(changes)
    marked = pending_add(affected, trigger)
    if marked:
        transaction.on_commit(flush_soon)
    return {k: len(v) for k, v in affected.items()}


# A subject already waiting is not queued twice; one a flush holds is released from its claim, so the
# flush that is evaluating it (perhaps from data older than this change) does not delete the mark.
_PENDING_INSERT = """
    INSERT INTO rules_pendingevaluation (subject_type, subject_id, trigger, queued_at)
    SELECT %s, id, %s, now() FROM unnest(%s::bigint[]) AS id
    ON CONFLICT (subject_type, subject_id) DO UPDATE SET claim = NULL, claimed_until = NULL
    WHERE rules_pendingevaluation.claim IS NOT NULL
"""


def pending_add(subjects: dict[str, set[int]], trigger: str) -> int:
    """Queue subjects for evaluation (one row per subject, however often it is marked); rows queued."""
    inserted = 0
    with connection.cursor() as cursor:
        for subject_type, ids in subjects.items():
            if ids:
                cursor.execute(_PENDING_INSERT, [subject_type, trigger, sorted(ids)])
                inserted += cursor.rowcount
    return inserted


_FLUSH_KEY = "fulcrum:rules:flush-scheduled"


def flush_soon() -> None:
    """Schedule one flush at the end of the coalescing window, unless one is already scheduled.

    The Redis key is only an optimisation against queueing a task per delivery: without Redis a flush is
    queued each time, and the beat sweep flushes whatever a lost task left behind.
    """
    from .tasks import evaluate_pending

    window = float(settings.FULCRUM["EVALUATION_COALESCE_SECONDS"])
    try:
        scheduled = _redis().set(_FLUSH_KEY, "1", nx=True, px=int(max(window, 1.0) * 10_000))
    except RedisError:
        scheduled = True
    if scheduled:
        evaluate_pending.apply_async(countdown=window)


def flush_scheduled_clear() -> None:
    """A flush is starting: later marks must schedule another one (it may not see their rows)."""
    with contextlib.suppress(RedisError):
        _redis().delete(_FLUSH_KEY)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)


# Longer than any flush of ``limit`` subjects takes: a claim outliving it means the worker died.
CLAIM_LEASE = dt.timedelta(minutes=15)

_CLAIM = """
    UPDATE rules_pendingevaluation SET claim = %(claim)s, claimed_until = now() + %(lease)s
     WHERE id IN (SELECT id FROM rules_pendingevaluation
                   WHERE claimed_until IS NULL OR claimed_until < now()
                   ORDER BY queued_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING subject_type, subject_id, trigger
"""


def pending_flush(*, limit: int = 5_000) -> dict[str, int]:
    """Evaluate waiting subjects, oldest first, ``limit`` at a time; returns subjects per type.

    Each round claims rows for a lease (``SKIP LOCKED``: two flushes never take the same subject),
    evaluates them in the evaluation's own transactions (so no flush holds locks across batches), then
    deletes the rows it still holds. A failed evaluation releases its claim; a killed worker's claim
    lapses after ``CLAIM_LEASE``. Either way the subjects are evaluated again, never lost.
    """
    from .services import evaluate_subjects

    done: dict[str, int] = {}
    while True:
        claim = uuid.uuid4()
        with connection.cursor() as cursor:
            params: dict[str, Any] = {"claim": claim, "lease": CLAIM_LEASE, "limit": limit}
            cursor.execute(_CLAIM, params)
            claimed = cursor.fetchall()
        if not claimed:
            return done
        groups: dict[tuple[str, str], list[int]] = {}
        for subject_type, subject_id, trigger in claimed:
            groups.setdefault((subject_type, trigger), []).append(subject_id)
        try:
            for (subject_type, trigger), ids in sorted(groups.items()):
                evaluate_subjects(subject_type=subject_type, ids=sorted(ids), trigger=trigger)
                done[subject_type] = done.get(subject_type, 0) + len(ids)
        except BaseException:
            _claim_end(claim, "UPDATE rules_pendingevaluation SET claim = NULL, claimed_until = NULL")
            raise
        _claim_end(claim, "DELETE FROM rules_pendingevaluation")
        if len(claimed) < limit:
            return done


def _claim_end(claim: uuid.UUID, statement: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"{statement} WHERE claim = %s", [claim])
