"""Operator actions on a connection beside the sync itself: test it, resync from a date, sweep deleted ids."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.audit.services import Actor, audit_record
from apps.entities.loaders import source_column

from .http import HttpClient, UpstreamError
from .kinds import BadRecord, ConfigurationError, Stream, get_kind
from .kinds.base import make_cursor
from .models import Connection, StreamState, SyncRun
from .services import ENTITY_KEYS


@dataclass(frozen=True)
class StreamProbe:
    """What fetching a stream's first page gave: how many records, or why it failed."""

    stream: str
    records: int | None
    error: str = ""

    def __str__(self) -> str:
        return (
            f"{self.stream}: {self.records} record(s) on the first page"
            if not self.error
            else (f"{self.stream}: {self.error}")
        )


def connection_test(*, connection: Connection, actor: Actor) -> list[StreamProbe]:
    """Fetch the first page of each stream (full read, nothing stored); a configuration error is one probe."""
    try:
        kind = get_kind(connection)
        streams = kind.streams
        client = kind.client()
    except ConfigurationError as exc:
        probes = [StreamProbe("configuration", None, str(exc))]
    else:
        probes = []
        try:
            for stream in streams:
                try:
                    page = next(iter(stream.pages(client, {}, True)), None)
                except (UpstreamError, ConfigurationError) as exc:
                    probes.append(StreamProbe(stream.name, None, str(exc)))
                else:
                    probes.append(StreamProbe(stream.name, len(page.records) if page else 0))
        finally:
            client.close()
    audit_record(
        action="connection.tested",
        actor=actor,
        object_type="connection",
        object_id=connection.slug,
        data={"ok": all(not p.error for p in probes), "streams": [str(p) for p in probes]},
    )
    return probes


# ---- reconciliation: deletes upstream become tombstones ----------------------------------------------


@dataclass
class SweepResult:
    """One stream's id sweep: how many ids upstream listed and how many local records it tombstoned."""

    stream: str
    listed: int = 0
    tombstoned: int = 0
    error: str = ""
    changed: dict[str, set[int]] = field(default_factory=dict)


class TooManyGone(Exception):
    """A sweep would tombstone an implausible share of a stream: more likely a short answer than deletes."""


# A sweep refusing to tombstone more than this share of a stream's live records (options override it);
# a listing cut short by a misconfigured filter must not erase the data. Rebuild is the deliberate path.
SWEEP_MAX_FRACTION = 0.5
SWEEP_ALWAYS_ALLOWED = 20


def _tombstone(
    connection: Connection,
    stream: Stream,
    present: set[str],
    before: dt.datetime,
    now: dt.datetime,
    max_fraction: float | None = None,
) -> list[int]:
    """Mark the stream's live rows whose ids upstream no longer lists as deleted; their primary keys.

    Rows synced after ``before`` (the listing's start) are spared: a webhook may have stored a record
    created upstream after the listing passed it. With ``max_fraction``, TooManyGone instead of marking
    more than that share of the live rows (beyond a small absolute number).
    """
    model = stream.model
    live = model.objects.filter(  # type: ignore[attr-defined]
        **{source_column(model): connection.pk}, **stream.scope(), deleted_at__isnull=True
    )
    rows = live.filter(synced_at__lt=before).exclude(
        external_id__in=RawSQL("SELECT unnest(%s::text[])", (sorted(present),))
    )
    ids = list(rows.values_list("pk", flat=True))
    if max_fraction is not None and len(ids) > SWEEP_ALWAYS_ALLOWED:
        total = live.count()
        if len(ids) > max_fraction * total:
            raise TooManyGone(
                f"would tombstone {len(ids)} of {total} live records (listed {len(present)}): refused; "
                "check the connection, or run Rebuild to confirm the deletes"
            )
    if ids:
        model.objects.filter(pk__in=ids).update(deleted_at=now)  # type: ignore[attr-defined]
    return ids


def _listed_ids(stream: Stream, client: HttpClient) -> set[str]:
    """Every id the upstream lists for the stream now (a full read, nothing stored)."""
    present: set[str] = set()
    for page in stream.pages(client, {}, True):
        for raw in page.records:
            try:
                present.add(stream.normalise(raw)["external_id"])
            except BadRecord:
                continue  # never stored, so nothing local to keep or tombstone
    return present


def _claim_sweep(connection: Connection, stream: str) -> SyncRun | None:
    """A full SyncRun row marks the sweep running (one job per stream at a time); None if one runs."""
    from .services import SyncAlreadyRunning, _claim

    try:
        return _claim(connection, stream, True)
    except SyncAlreadyRunning:
        return None


def connection_reconcile(*, connection: Connection, streams: list[str] | None = None) -> list[SweepResult]:
    """The id sweep: list each stream's upstream ids and tombstone local records upstream no longer has.

    Cursor syncs never see hard deletes; this does. A stream whose listing fails tombstones nothing.
    """
    kind = get_kind(connection)
    results = []
    client = kind.client()
    try:
        for stream in kind.streams:
            if streams is not None and stream.name not in streams:
                continue
            result = SweepResult(stream.name)
            results.append(result)
            run = _claim_sweep(connection, stream.name)
            if run is None:
                result.error = "a sync of this stream is running; swept next time"
                continue
            started = timezone.now()
            status = SyncRun.Status.SUCCEEDED
            try:
                present = _listed_ids(stream, client)
            except UpstreamError as exc:
                result.error, status = str(exc), SyncRun.Status.PARTIAL
            else:
                result.listed = len(present)
                limit = float((connection.options or {}).get("reconcile_max_fraction", SWEEP_MAX_FRACTION))
                with transaction.atomic():
                    try:
                        ids = _tombstone(connection, stream, present, started, timezone.now(), limit)
                    except TooManyGone as exc:
                        ids, result.error, status = [], str(exc), SyncRun.Status.PARTIAL
                    result.tombstoned = len(ids)
                    if ids:
                        result.changed[stream.entity] = set(ids)
                        audit_record(
                            action="connection.tombstoned",
                            actor="system:reconcile",
                            object_type="connection",
                            object_id=connection.slug,
                            data={"stream": stream.name, "count": len(ids)},
                        )
                    StreamState.objects.filter(connection=connection, stream=stream.name).update(
                        last_reconciled_at=started
                    )
            SyncRun.objects.filter(pk=run.pk).update(
                status=status,
                finished_at=timezone.now(),
                error=result.error,
                counts={
                    "reconcile": True,
                    "listed": result.listed,
                    "tombstoned": result.tombstoned,
                    "api_calls": client.stats.api_calls,
                },
            )
    finally:
        client.close()
    _tell_rules([r.changed for r in results])
    return results


def _tell_rules(changes: list[dict[str, set[int]]]) -> None:
    merged: dict[str, set[int]] = {}
    for change in changes:
        for key, ids in change.items():
            merged.setdefault(key, set()).update(ids)
    relevant = {key: ids for key, ids in merged.items() if key in ENTITY_KEYS and ids}
    if relevant:
        from apps.rules.triggers import on_entities_changed

        on_entities_changed(relevant, trigger="sync")


# ---- resync from a date, rebuild -----------------------------------------------------------------------


@transaction.atomic
def connection_resync_from(*, connection: Connection, since: dt.datetime, actor: Actor) -> int:
    """Move every stream's cursor back to ``since`` (data is kept) and queue a sync; streams reset."""
    from .tasks import sync_connection_task

    cursor = make_cursor(since, "")
    names = [stream.name for stream in get_kind(connection).streams]
    for name in names:
        StreamState.objects.get_or_create(connection=connection, stream=name)
    reset = StreamState.objects.filter(connection=connection, stream__in=names).update(cursor=cursor)
    audit_record(
        action="connection.resync_from",
        actor=actor,
        object_type="connection",
        object_id=connection.slug,
        data={"since": since.isoformat(), "streams": names},
    )
    transaction.on_commit(lambda: sync_connection_task.delay(connection.pk))
    return reset


@dataclass
class RebuildResult:
    runs: list[SyncRun]
    tombstoned: dict[str, int]

    @property
    def succeeded(self) -> bool:
        return all(run.status == SyncRun.Status.SUCCEEDED for run in self.runs)


def connection_rebuild(*, connection: Connection, actor: Actor) -> RebuildResult:
    """Re-read everything, then (only if every stream succeeded) tombstone what the re-read did not see.

    Live data is never removed first: the upsert overwrites in place, so readers see old or new rows,
    never none; a failed rebuild leaves the last good state plus whatever newer records it stored.
    """
    from .services import sync_connection

    started = timezone.now()
    seen: dict[str, set[str]] = {}
    runs = sync_connection(connection=connection, full=True, seen_ids=seen)
    result = RebuildResult(runs, {})
    if result.succeeded and len(runs) == len(get_kind(connection).streams):
        changes = []
        with transaction.atomic():
            kind = get_kind(connection)
            for stream in kind.streams:
                ids = _tombstone(connection, stream, seen.get(stream.name, set()), started, timezone.now())
                result.tombstoned[stream.name] = len(ids)
                if ids:
                    changes.append({stream.entity: set(ids)})
            audit_record(
                action="connection.rebuilt",
                actor=actor,
                object_type="connection",
                object_id=connection.slug,
                data={"tombstoned": result.tombstoned},
            )
        _tell_rules(changes)
    else:
        audit_record(
            action="connection.rebuild_failed",
            actor=actor,
            object_type="connection",
            object_id=connection.slug,
            data={"runs": [f"{r.stream} {r.status}" for r in runs]},
        )
    return result
