"""Celery entry points for connectors: thin wrappers that fetch by id and call one service."""

from __future__ import annotations

import math

from celery import shared_task

from . import ratelimit
from .kinds import get_kind
from .models import Connection, SyncRun
from .services import SyncAlreadyRunning, sync_connection


# No task-level retries: the HTTP client already retried, and a partial run resumes from its cursor on the
# next schedule. Re-running is safe (one run per stream is enforced by the database), hence acks_late.
@shared_task(acks_late=True, max_retries=0, ignore_result=True)
def sync_connection_task(connection_id: int, full: bool = False) -> str:
    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None:
        return f"connection {connection_id} no longer exists"
    if not connection.enabled:
        return f"{connection.slug}: disabled, skipped"
    # An incremental run reads the changes; a stream's reconciliation share (Procore's rotating projects)
    # is its own task after it, so the changes are linked and marked without waiting for the share's calls.
    share = not full and any(stream.has_share for stream in get_kind(connection).streams)
    ratelimit.take_deferral()  # a previous task's, in this process
    try:
        with ratelimit.deferring():
            runs = sync_connection(connection=connection, full=full, reads="changes" if share else "both")
    except SyncAlreadyRunning as exc:
        return f"skipped: {exc}"
    wait = ratelimit.take_deferral()
    if wait:
        # The shared budget is spent: come back when it refills instead of sleeping in this slot. The
        # runs ended partial at their last committed page, so the next one resumes from there (and queues
        # the share then).
        sync_connection_task.apply_async((connection_id, full), countdown=math.ceil(wait))
        return f"{summarise(connection, runs)}; rate budget spent, re-queued in {math.ceil(wait)} s"
    if share:
        # Once per incremental run, as the share was read before: every project within
        # project_rotation_runs runs (a day of the schedule by default).
        reconcile_share_task.delay(connection_id)
    return summarise(connection, runs)


@shared_task(acks_late=True, max_retries=0, ignore_result=True)
def reconcile_share_task(connection_id: int) -> str:
    """The reconciliation share of an incremental run (Procore: the projects read least recently, re-read
    for changes whose webhook was lost), queued by ``sync_connection_task`` after the changes."""
    connection = Connection.objects.filter(pk=connection_id, enabled=True).first()
    if connection is None:
        return f"connection {connection_id} missing or disabled"
    ratelimit.take_deferral()
    try:
        with ratelimit.deferring():
            runs = sync_connection(connection=connection, reads="share")
    except SyncAlreadyRunning as exc:
        return f"skipped: {exc}"  # a full sync reads every project; a later run's share follows
    wait = ratelimit.take_deferral()
    if wait:
        reconcile_share_task.apply_async((connection_id,), countdown=math.ceil(wait))
        return f"{summarise(connection, runs)}; rate budget spent, re-queued in {math.ceil(wait)} s"
    return summarise(connection, runs)


def summarise(connection: Connection, runs: list[SyncRun]) -> str:
    """One line: overall status and, per stream, what changed (or what went wrong)."""
    failed = [r for r in runs if r.status != SyncRun.Status.SUCCEEDED]
    parts = [
        f"{r.stream} {r.status} seen={r.counts.get('seen', 0)} +{r.counts.get('inserted', 0)}"
        f" ~{r.counts.get('updated', 0)} ={r.counts.get('unchanged', 0)} !{r.counts.get('quarantined', 0)}"
        for r in runs
    ]
    status = failed[0].status if failed else "succeeded"
    tail = f": {failed[0].error}" if failed and failed[0].error else ""
    return f"{connection.slug} {status}: " + "; ".join(parts) + tail


@shared_task(acks_late=True, max_retries=0, ignore_result=True)
def reconcile_connection_task(
    connection_id: int, actor: str = "system:reconcile", confirm_mass_delete: bool = False
) -> str:
    """The scheduled id sweep: records gone upstream become tombstones (``confirm_mass_delete``: an
    administrator confirmed more than the guard's share)."""
    from .operations import connection_reconcile

    connection = Connection.objects.filter(pk=connection_id, enabled=True).first()
    if connection is None:
        return f"connection {connection_id} missing or disabled"
    results = connection_reconcile(
        connection=connection, actor=actor, confirm_mass_delete=confirm_mass_delete
    )
    return f"{connection.slug}: " + "; ".join(
        f"{r.stream} listed={r.listed} tombstoned={r.tombstoned}" + (f" ({r.error})" if r.error else "")
        for r in results
    )


@shared_task(acks_late=True, max_retries=0, ignore_result=True)
def rebuild_connection_task(
    connection_id: int, actor: str = "system:rebuild", confirm_mass_delete: bool = False
) -> str:
    from .operations import connection_rebuild

    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None:
        return f"connection {connection_id} no longer exists"
    try:
        result = connection_rebuild(
            connection=connection, actor=actor, confirm_mass_delete=confirm_mass_delete
        )
    except SyncAlreadyRunning as exc:
        return f"skipped: {exc}"
    if result.refused:
        return summarise(connection, result.runs) + f"; nothing tombstoned: {result.refused}"
    return summarise(connection, result.runs) + f"; tombstoned {result.tombstoned}"


@shared_task(acks_late=True, max_retries=3, ignore_result=True, autoretry_for=(OSError,), retry_backoff=60)
def catch_up_connection_task(connection_id: int, since: str, actor: str = "system:catch-up") -> str:
    """Re-read what changed since ``since`` through the kind's change feed (QuickBooks: CDC). Safe to run
    twice: every write goes through the version-guarded upsert."""
    import datetime as dt

    from .operations import connection_catch_up

    connection = Connection.objects.filter(pk=connection_id, enabled=True).first()
    if connection is None:
        return f"connection {connection_id} missing or disabled"
    counts = connection_catch_up(connection=connection, since=dt.datetime.fromisoformat(since), actor=actor)
    return f"{connection.slug} caught up: {counts}"


@shared_task(acks_late=True, ignore_result=True)
def catch_up_silent_connections() -> str:
    """Beat (CELERY_BEAT_SCHEDULE "catch-up-silent-webhooks"): queue a catch-up for each connection whose
    webhooks have been silent past its vendor's retry window, while the silence lasts."""
    from .operations import connections_catch_up_due

    due = connections_catch_up_due()
    for connection_id, since in due:
        catch_up_connection_task.delay(connection_id, since.isoformat())
    return f"queued {len(due)} catch-up(s)"
