"""What to re-evaluate when entities change: each change marks the subjects that depend on it."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from apps.bulk import array_literal, id_array
from apps.connectors.ratelimit import redis_client
from apps.entities.models import Document

logger = logging.getLogger(__name__)

SUBJECTS = ("change_order", "project", "client", "submittal", "document")
# The entity keys whose changes reach some subject's facts (crosswalk rows reach them through linking).
TRIGGER_KEYS = frozenset(
    {
        "client",
        "project",
        "milestone",
        "change_order",
        "submittal",
        "vendor",
        "financial_line",
        "crm_owner",
        "document",
    }
)
# The Celery tasks evaluating what is marked, registered by the pipeline (apps/orchestration/tasks.py)
# under these names, which predate it (queued tasks and beat rows carry them). Rules look them up in the
# app's registry instead of importing the layer above.
EVALUATE_PENDING_TASK = "apps.rules.tasks.evaluate_pending"
EVALUATE_RUN_TASK = "apps.rules.tasks.evaluate_run_task"


def task(name: str) -> Any:
    """The registered task ``name``. A process that is not a worker (web, a command, a bench) has not
    imported the apps' task modules yet: they are imported as a worker would (Celery's autodiscovery)."""
    if name not in current_app.tasks:
        current_app.loader.import_default_modules()
    return current_app.tasks[name]


def entities_changed_receive(
    sender: object,
    *,
    changes: dict[str, set[int]],
    trigger: str,
    since: dt.datetime | None = None,
    **_: object,
) -> None:
    """Subscribed to ``apps.entities.changes.entities_changed`` in ``RulesConfig.ready()``."""
    relevant = {key: ids for key, ids in changes.items() if key in TRIGGER_KEYS and ids}
    if relevant:
        on_entities_changed(relevant, trigger=trigger, since=since)


def affected_subjects(changes: dict[str, set[int]]) -> dict[str, set[int]]:
    """Map changed entity ids to the subjects whose facts read them (coalesced per call).

    Each step is one statement with the ids as one array parameter (``= ANY(%s::bigint[])``, an array
    literal), reading the foreign key columns directly: a full sync hands over every id it stored (234k
    money lines at scale 17), and ``__in`` lists of that size cost more in building and planning the
    statement than in running it.
    """
    projects = set(changes.get("project", set()))
    clients = set(changes.get("client", set()))
    documents = set(changes.get("document", set()))
    linked_change_orders: set[int] = set()
    if documents:
        # A document's facts feed its project's (low-confidence count) and its change order's (delta).
        for project_id, change_order_id in Document.objects.filter(id__in=documents).values_list(
            "project_id", "change_order_id"
        ):
            if project_id:
                projects.add(project_id)
            if change_order_id:
                linked_change_orders.add(change_order_id)
    # Money, milestones and change orders are project facts; milestones also feed client facts.
    for entity, table in (
        ("milestone", "entities_milestone"),
        ("change_order", "entities_changeorder"),
    ):
        if ids := changes.get(entity):
            projects |= _ids(f"SELECT DISTINCT project_id FROM {table} WHERE id = ANY(%s::bigint[])", ids)  # noqa: S608
    # Money lines whose change can move a client fact: invoices (client.ar_overdue_amount), every kind
    # when a client's custom fact reads money. Other lines (bills, purchases, estimates) move their
    # project's facts only, so their client and its other projects keep theirs.
    cost_only: set[int] = set()
    if lines := changes.get("financial_line"):
        money, cost_only = _money_projects(lines)
        projects |= money
    if projects:
        clients |= _ids(
            "SELECT DISTINCT client_id FROM entities_project WHERE id = ANY(%s::bigint[])", projects
        )
    projects |= cost_only
    if clients:
        projects |= _ids("SELECT id FROM entities_project WHERE client_id = ANY(%s::bigint[])", clients)
    change_orders = set(changes.get("change_order", set())) | linked_change_orders
    submittals = set(changes.get("submittal", set()))
    if projects:
        change_orders |= _ids(
            "SELECT id FROM entities_changeorder WHERE project_id = ANY(%s::bigint[])", projects
        )
        submittals |= _ids("SELECT id FROM entities_submittal WHERE project_id = ANY(%s::bigint[])", projects)
    if vendors := changes.get("vendor"):
        submittals |= _ids("SELECT id FROM entities_submittal WHERE vendor_id = ANY(%s::bigint[])", vendors)
    # Documents see their project's and client's facts, and compare with their change order or invoice.
    if projects:
        documents |= _ids("SELECT id FROM entities_document WHERE project_id = ANY(%s::bigint[])", projects)
    if direct := changes.get("change_order"):
        documents |= _ids(
            "SELECT id FROM entities_document WHERE change_order_id = ANY(%s::bigint[])", direct
        )
    if invoices := changes.get("financial_line"):
        documents |= _ids("SELECT id FROM entities_document WHERE invoice_id = ANY(%s::bigint[])", invoices)
    return {
        "change_order": change_orders,
        "project": projects,
        "client": clients,
        "submittal": submittals,
        "document": documents,
    }


# A client custom fact that can read money lines: an aggregate over them, or (conservatively) a ratio or
# difference of other facts.
_CLIENT_READS_MONEY = """
    SELECT EXISTS (SELECT 1 FROM rules_customfact f JOIN rules_customfactversion v ON v.id = f.current_id
                    WHERE f.subject_type = 'client'
                      AND (v.spec->>'kind' <> 'aggregate' OR v.spec->>'related' = 'financial_lines'))
"""


def _money_projects(lines: set[int]) -> tuple[set[int], set[int]]:
    """(projects of the lines that feed client facts, projects of the others and of none of those)."""
    with connection.cursor() as cursor:
        cursor.execute(_CLIENT_READS_MONEY)
        every_kind = bool(cursor.fetchone()[0])
        cursor.execute(
            "SELECT DISTINCT project_id, kind = 'invoice' OR %s FROM entities_financialline"
            " WHERE id = ANY(%s::bigint[]) AND project_id IS NOT NULL",
            [every_kind, id_array(lines)],
        )
        rows = cursor.fetchall()
    client_facing = {project for project, feeds_client in rows if feeds_client}
    return client_facing, {project for project, _ in rows} - client_facing


def _ids(sql: str, ids: set[int]) -> set[int]:
    """The non-null first column of ``sql`` run with ``ids`` as its one array parameter."""
    with connection.cursor() as cursor:
        cursor.execute(sql, [id_array(ids)])
        return {row[0] for row in cursor if row[0] is not None}  # row by row: no list of every row


def on_entities_changed(
    changes: dict[str, set[int]], trigger: str = "sync", since: dt.datetime | None = None
) -> dict[str, int]:
    """Mark the affected subjects for evaluation, in the caller's transaction, and make sure a flush runs.

    Marks coalesce: a subject already waiting is not queued twice, so a burst of webhook deliveries about
    one client becomes one evaluation of each dependent subject when the burst's window closes. ``since``:
    when the oldest of the changes reached Fulcrum (a webhook's arrival), which starts its window.
    """
    affected = affected_subjects(changes)
    if pending_add(affected, trigger):
        # Even when every subject was already waiting: a flush running now may have skipped the rows
        # this transaction holds locked (Redis keeps it to one scheduled flush per window).
        transaction.on_commit(lambda: flush_soon(since=since))
    return {k: len(v) for k, v in affected.items()}


# A subject already waiting is not queued twice; it takes the latest trigger, and one that a flush holds
# is released from its claim, so the flush evaluating it (perhaps from data older than this change) does
# not delete the mark. A failed subject's retry time (claimed_until without a claim) is kept. A waiting
# row that would not change (same trigger, no claim) is not rewritten: PostgreSQL still locks it (the
# order below holds), but writes no new version of it and its four index entries (marking 38k waiting
# subjects again: 0.36 s -> 0.11 s), as every connection of a sync and every webhook of a burst does.
# One statement for every subject type, its rows locked in (subject type, subject id) order: two
# transactions marking overlapping subjects then wait for each other in the same order and cannot deadlock
# (one insert per type, or per call, let a transaction hold a later row while waiting for an earlier one:
# a writer marking twice in one transaction collects its changes, ``entities_changes_collected``). The
# flush never waits on a row a marker holds (``SKIP LOCKED`` everywhere it locks), so it closes no cycle.
_PENDING_ROWS = """
    INSERT INTO rules_pendingevaluation AS p (subject_type, subject_id, trigger, queued_at, attempts)
    SELECT s.subject_type, s.subject_id, %s, now(), 0
      FROM unnest(%s::text[], %s::bigint[]) AS s(subject_type, subject_id)
     ORDER BY s.subject_type COLLATE "C", s.subject_id
"""
_PENDING_INSERT = (
    _PENDING_ROWS
    + """
    ON CONFLICT (subject_type, subject_id) DO UPDATE
       SET trigger = EXCLUDED.trigger, claim = NULL,
           claimed_until = CASE WHEN p.claim IS NULL THEN p.claimed_until END
     WHERE p.trigger IS DISTINCT FROM EXCLUDED.trigger OR p.claim IS NOT NULL
"""
)


# Marks that must not override a waiting subject's trigger (data quality's findings follow the change
# that marked it): a subject already waiting keeps its row as it is.
_PENDING_INSERT_KEEP = _PENDING_ROWS + "    ON CONFLICT (subject_type, subject_id) DO NOTHING\n"


def pending_add(subjects: dict[str, set[int]], trigger: str, *, keep: bool = False) -> int:
    """Queue subjects for evaluation (one row per subject, however often it is marked), in one ordered
    statement; returns the subjects marked. ``keep``: a subject already waiting keeps its trigger and
    claim."""
    types: list[str] = []
    ids: list[int] = []
    for subject_type, subject_ids in subjects.items():
        unique = set(subject_ids)  # a row twice in one statement is an error for ON CONFLICT DO UPDATE
        types += [subject_type] * len(unique)
        ids += unique
    if ids:
        with connection.cursor() as cursor:
            cursor.execute(
                _PENDING_INSERT_KEEP if keep else _PENDING_INSERT,
                [trigger, array_literal(types), array_literal(ids)],  # the statement orders the rows
            )
    return len(ids)


_FLUSH_KEY = "fulcrum:rules:flush-scheduled"
_FLUSH_NOW_KEY = "fulcrum:rules:flush-now"


# How long the "a flush is scheduled" guard outlives the window. The flush clears it when it starts; the
# guard only expires by itself when that task is lost (a worker SIGKILLed while holding its countdown
# message, which Redis gives back only after the visibility timeout) or late (every slot busy), and until it
# expires no later change schedules a flush. It was ten windows (20 s by default): the soak saw decisions
# 7–11 s late after a lost flush. A guard expiring early only queues one flush more, which finds the rows
# already claimed or gone (SKIP LOCKED).
FLUSH_GUARD_GRACE = 2.0


def flush_guard_seconds(window: float) -> float:
    """Seconds the guard lives: twice the window plus ``FLUSH_GUARD_GRACE``."""
    return 2 * window + FLUSH_GUARD_GRACE


# A change whose window closed before it was stored is flushed at once, by at most one such flush per
# this share of the window: after a vendor's fault clears, or under a backlog, many held-up deliveries
# finish within moments of each other, and each flush then evaluates fewer subjects at a time.
FLUSH_NOW_SHARE = 0.25


def flush_soon(since: dt.datetime | None = None) -> None:
    """Schedule one flush at the end of the coalescing window, unless one is already scheduled.

    The window is counted from ``since`` (when the change reached Fulcrum) when given: a webhook held up
    by its vendor for longer than the window is evaluated as soon as it is stored, not a window later,
    even when a fresher change has already scheduled the next flush (one more runs now; it finds the
    rows the other claims already taken, ``SKIP LOCKED``).

    The Redis keys are only an optimisation against queueing a task per delivery: without Redis a flush is
    queued each time, and the beat sweep flushes whatever a lost task left behind.
    """
    window = float(settings.FULCRUM["EVALUATION_COALESCE_SECONDS"])
    wait = window
    if since is not None:
        wait = min(window, max(0.0, window - (timezone.now() - since).total_seconds()))
    try:
        guard_ms = int(flush_guard_seconds(window) * 1000)
        scheduled = _redis().set(_FLUSH_KEY, "1", nx=True, px=guard_ms)
        if not scheduled and wait == 0:
            now_guard_ms = max(1, int(window * FLUSH_NOW_SHARE * 1000))
            scheduled = _redis().set(_FLUSH_NOW_KEY, "1", nx=True, px=now_guard_ms)
    except RedisError:
        scheduled = True
    if scheduled:
        task(EVALUATE_PENDING_TASK).apply_async(countdown=wait)


def flush_scheduled_clear() -> None:
    """A flush is starting: later marks must schedule another one (it may not see their rows)."""
    with contextlib.suppress(RedisError):
        # Not the immediate flushes' guard: a flush starting would let the next held-up batch queue
        # another at once, and under a backlog the quarter-window limit would never hold.
        _redis().delete(_FLUSH_KEY)


def flush_guards_clear(client: redis.Redis | None = None) -> None:
    """Forget both flush guards, so that the next mark queues a flush at once: for tests and benches that
    start from a clean slate. ``client``: the Redis holding them (default: the broker's, as here)."""
    (client or _redis()).delete(_FLUSH_KEY, _FLUSH_NOW_KEY)


def _redis() -> redis.Redis:
    return redis_client(settings.CELERY_BROKER_URL)


# Renewed before each group for a lease sized to it: longer than the group's evaluation takes on a loaded
# machine (~10 ms a subject allowed; measured ~0.1 ms), so a claim outliving it means the worker died, and
# short enough that a killed worker's subjects are evaluated again within a minute or two, not after 15.
CLAIM_PER_SUBJECT = dt.timedelta(milliseconds=10)


def claim_lease(count: int) -> dt.timedelta:
    base = dt.timedelta(seconds=float(settings.FULCRUM.get("EVALUATION_CLAIM_SECONDS", 60.0)))
    return base + CLAIM_PER_SUBJECT * count


_CLAIM = """
    UPDATE rules_pendingevaluation SET claim = %(claim)s, claimed_until = now() + %(lease)s
     WHERE id IN (SELECT id FROM rules_pendingevaluation
                   WHERE claimed_until IS NULL OR claimed_until < now()
                   ORDER BY queued_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING subject_type, subject_id, trigger
"""
# Renew and release skip rows locked by a marker: it is releasing them from this claim anyway (it sets
# ``claim`` to NULL). Waiting on them while holding the rows already renewed could deadlock with it.
_RENEW = """
    UPDATE rules_pendingevaluation SET claimed_until = now() + %(lease)s
     WHERE id IN (SELECT id FROM rules_pendingevaluation WHERE claim = %(claim)s FOR UPDATE SKIP LOCKED)
"""
# Rows being marked again right now are skipped: the marker releases them from the claim (re-queued).
_HELD = """
    SELECT id FROM rules_pendingevaluation
     WHERE claim = %(claim)s AND subject_type = %(subject_type)s AND subject_id = ANY(%(ids)s)
     ORDER BY subject_id FOR UPDATE SKIP LOCKED
"""
_DONE = f"DELETE FROM rules_pendingevaluation WHERE id IN ({_HELD})"  # noqa: S608 - constants only
# Tried again after 1, 2, 4 ... minutes, at most an hour apart; the admin home flags the wait.
_FAILED = f"""
    UPDATE rules_pendingevaluation
       SET claim = NULL, attempts = attempts + 1,
           claimed_until = now() + make_interval(mins => least(power(2, attempts)::int, 60))
     WHERE id IN ({_HELD})
"""  # noqa: S608 - constants only
_RELEASE = """
    UPDATE rules_pendingevaluation SET claim = NULL, claimed_until = NULL
     WHERE id IN (SELECT id FROM rules_pendingevaluation WHERE claim = %(claim)s FOR UPDATE SKIP LOCKED)
"""


def pending_flush(*, evaluate: Callable[..., object], limit: int = 5_000) -> dict[str, int]:
    """Evaluate waiting subjects, oldest first, ``limit`` at a time; returns subjects evaluated per type.

    Each round claims rows for a lease (``SKIP LOCKED``: two flushes never take the same subject) and
    evaluates them per subject type with ``evaluate`` (the pipeline's), in its own transactions (so no
    flush holds locks across evaluation batches), deleting each group's rows once it is evaluated. A group
    whose evaluation fails is logged and tried again later, backing off, while the other groups go on; a
    killed worker's claim lapses after ``claim_lease`` (a minute, plus 10 ms a subject). Either way the
    subjects are evaluated again, never lost.
    """
    done: dict[str, int] = {}
    while True:
        claim = uuid.uuid4()
        params: dict[str, Any] = {"claim": claim, "lease": claim_lease(limit), "limit": limit}
        claimed = _run(_CLAIM, params, fetch=True)
        if not claimed:
            return done
        groups: dict[tuple[str, str], list[int]] = {}
        for subject_type, subject_id, trigger in claimed:
            groups.setdefault((subject_type, trigger), []).append(subject_id)
        try:
            for (subject_type, trigger), ids in sorted(groups.items()):
                group = {**params, "subject_type": subject_type, "ids": sorted(ids)}
                _run(_RENEW, {**params, "lease": claim_lease(len(ids))})
                try:
                    evaluate(subject_type=subject_type, ids=group["ids"], trigger=trigger)
                except Exception:
                    logger.exception(
                        "evaluating %d %s subjects failed; they are tried again later", len(ids), subject_type
                    )
                    _run(_FAILED, group)
                    continue
                _run(_DONE, group)
                done[subject_type] = done.get(subject_type, 0) + len(ids)
        except BaseException:  # the worker is stopping: what this flush still holds is free at once
            _run(_RELEASE, params)
            raise
        if len(claimed) < limit:
            return done


def _run(statement: str, params: dict[str, Any], *, fetch: bool = False) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if fetch else []
