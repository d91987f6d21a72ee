"""Operator actions on a connection beside the sync itself: test it, resync from a date, sweep deleted ids,
catch up after webhook downtime."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.audit.services import Actor, audit_record
from apps.entities.loaders import source_column

from .http import HttpClient, UpstreamError
from .kinds import BadRecord, ConfigurationError, Stream, get_kind
from .kinds.base import make_cursor
from .models import Connection, StreamState, SyncRun
from .services import UNREADABLE, changes_publish


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
#
# A listing cannot prove a record gone: the pagers list up to their own start (an edit during the listing
# moves a record past that bound and out of the list), a page may come back short, a filter may be wrong.
# So a record missing from the listing is only a *candidate*. Candidates are counted against the stream's
# live records first (the mass-delete guard: more than a share of them stops the sweep or Rebuild and
# reports it, unless an administrator confirms); then each one is asked for by id upstream (the kind's
# ``fetch_records``, as webhooks use), and only those upstream no longer returns become tombstones. A stream
# that cannot be read by id (HubSpot owners, a rest stream without ``detail_path``) instead re-lists what
# changed since the listing began: that covers every edit made before the re-read starts, leaving only
# the seconds of the re-read itself (a record edited then and tombstoned is revived by the next sync).


@dataclass
class SweepResult:
    """One stream's id sweep: how many ids upstream listed and how many local records it tombstoned."""

    stream: str
    listed: int = 0
    tombstoned: int = 0
    spared: int = 0  # candidates upstream still had when asked again (edited during the listing)
    error: str = ""
    changed: dict[str, set[int]] = field(default_factory=dict)


class TooManyGone(Exception):
    """A sweep would tombstone an implausible share of a stream: more likely a short answer than deletes."""


# A sweep or Rebuild refusing to tombstone more than this share of a stream's live records (options
# override it); a listing cut short by a misconfigured filter must not erase the data. An administrator
# confirms a real mass delete with the "confirm mass deletes" actions (``confirm_mass_delete``).
SWEEP_MAX_FRACTION = 0.5
SWEEP_ALWAYS_ALLOWED = 20


@dataclass
class _Candidates:
    """Live rows of a stream missing from a listing: primary key -> external id."""

    stream: Stream
    rows: dict[int, str]
    live: int
    listed: int


def _candidates(
    connection: Connection, stream: Stream, present: set[str], before: dt.datetime
) -> _Candidates:
    """The stream's live rows whose ids the listing lacks. Rows synced after ``before`` (the listing's
    start) are left out: a webhook may have stored a record created upstream after the listing passed it."""
    model = stream.model
    live = model.objects.filter(  # type: ignore[attr-defined]
        **{source_column(model): connection.pk}, **stream.scope(), deleted_at__isnull=True
    )
    rows = live.filter(synced_at__lt=before).exclude(
        external_id__in=RawSQL("SELECT unnest(%s::text[])", (sorted(present),))
    )
    found = dict(rows.values_list("pk", "external_id"))
    return _Candidates(stream, found, live.count() if found else 0, len(present))


def max_fraction(connection: Connection) -> float:
    return float((connection.options or {}).get("reconcile_max_fraction", SWEEP_MAX_FRACTION))


def _guard(candidates: _Candidates, limit: float | None) -> None:
    """TooManyGone when the candidates are more than ``limit`` of the live rows (beyond a few)."""
    count = len(candidates.rows)
    if limit is None or count <= SWEEP_ALWAYS_ALLOWED or count <= limit * candidates.live:
        return
    raise TooManyGone(
        f"would tombstone {count} of {candidates.live} live records (listed {candidates.listed}): refused "
        f"above {limit:.0%}; check the connection, or confirm the mass delete (admin action, or raise "
        "options.reconcile_max_fraction)"
    )


def _still_upstream(
    stream: Stream, client: HttpClient, external_ids: set[str], since: dt.datetime
) -> set[str]:
    """Which of ``external_ids`` upstream has now: asked by id, or re-listed from ``since`` when the stream
    cannot be read by id. UpstreamError propagates (then nothing is tombstoned)."""
    if not external_ids:
        return set()
    raws: list[Any] = []
    try:
        # A document fetched whole holds its "<doc>:<line>" rows.
        wanted = {i.partition(":")[0] for i in external_ids} if stream.line_items else set(external_ids)
        raws = stream.explode(list(stream.kind.fetch_records(client, stream, sorted(wanted))))
    except (NotImplementedError, ConfigurationError, AssertionError):
        # Every record edited since the listing began (less the lookback) is read again.
        raws = [raw for page in stream.pages(client, make_cursor(since, ""), False) for raw in page.records]
    seen: set[str] = set()
    for raw in raws:
        try:
            seen.add(str(stream.normalise(raw)["external_id"]))
        except (BadRecord, *UNREADABLE):  # unreadable now, but there: not gone
            seen.add(stream.record_id(raw))
    return seen & external_ids


def _confirmed(candidates: _Candidates, client: HttpClient, since: dt.datetime) -> dict[int, str]:
    """The candidates upstream really no longer has."""
    still = _still_upstream(candidates.stream, client, set(candidates.rows.values()), since)
    return {pk: external_id for pk, external_id in candidates.rows.items() if external_id not in still}


def _tombstone(
    connection: Connection, stream: Stream, rows: dict[int, str], before: dt.datetime, now: dt.datetime
) -> list[int]:
    """Mark confirmed-gone rows deleted; a row revived or re-synced since (a webhook) is left alone."""
    if not rows:
        return []
    model = stream.model
    gone = model.objects.filter(  # type: ignore[attr-defined]
        pk__in=list(rows), deleted_at__isnull=True, synced_at__lt=before
    )
    ids = sorted(gone.values_list("pk", flat=True))
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
            except (BadRecord, *UNREADABLE):
                continue  # never stored, so nothing local to keep or tombstone
    return present


def _claim_sweep(connection: Connection, stream: str) -> SyncRun | None:
    """A full SyncRun row marks the sweep running (one job per stream at a time); None if one runs."""
    from .services import SyncAlreadyRunning, _claim

    try:
        return _claim(connection, stream, True)
    except SyncAlreadyRunning:
        return None


def connection_reconcile(
    *,
    connection: Connection,
    streams: list[str] | None = None,
    confirm_mass_delete: bool = False,
    actor: Actor = "system:reconcile",
) -> list[SweepResult]:
    """The id sweep: list each stream's upstream ids and tombstone local records upstream no longer has.

    Cursor syncs never see hard deletes; this does. A stream whose listing fails tombstones nothing; one
    whose candidates exceed the mass-delete guard stops as *partial* with the count in its error, unless
    ``confirm_mass_delete``; each candidate is asked for again by id before it becomes a tombstone.
    """
    kind = get_kind(connection)
    results = []
    runs: list[SyncRun] = []
    client = kind.client()
    limit = None if confirm_mass_delete else max_fraction(connection)
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
            runs.append(run)
            started = timezone.now()
            status = SyncRun.Status.SUCCEEDED
            try:
                present = _listed_ids(stream, client)
                result.listed = len(present)
                candidates = _candidates(connection, stream, present, started)
                _guard(candidates, limit)
                gone = _confirmed(candidates, client, started)
            except UpstreamError as exc:
                result.error, status = str(exc), SyncRun.Status.PARTIAL
            except TooManyGone as exc:
                result.error, status = str(exc), SyncRun.Status.PARTIAL
                audit_record(
                    action="connection.tombstones_refused",
                    actor=actor,
                    object_type="connection",
                    object_id=connection.slug,
                    data={"stream": stream.name, "error": str(exc)},
                )
            else:
                result.spared = len(candidates.rows) - len(gone)
                with transaction.atomic():
                    ids = _tombstone(connection, stream, gone, started, timezone.now())
                    result.tombstoned = len(ids)
                    if ids:
                        result.changed[stream.entity] = set(ids)
                        audit_record(
                            action="connection.tombstoned",
                            actor=actor,
                            object_type="connection",
                            object_id=connection.slug,
                            data={
                                "stream": stream.name,
                                "count": len(ids),
                                "confirmed_mass_delete": confirm_mass_delete,
                            },
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
                    "spared": result.spared,
                    "api_calls": client.stats.api_calls,
                },
            )
    finally:
        client.close()
    _announce(connection, runs, [r.changed for r in results])
    return results


def _announce(connection: Connection, runs: list[SyncRun], changes: list[dict[str, set[int]]]) -> None:
    """Tombstones change what the rules read, and the crosswalk links that read only live rows (a job's
    project, a customer's client, a client's owner): those are linked here, as a sync's publish links around
    what it wrote, instead of waiting for the next publish that touches the same entities. ``runs`` are
    recorded published with them (a sweep that dies first is published by the connection's next sync)."""
    merged: dict[str, set[int]] = {}
    for change in changes:
        for key, ids in change.items():
            merged.setdefault(key, set()).update(ids)
    changes_publish(connection, runs, merged)


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
    refused: dict[str, str] = field(default_factory=dict)  # stream -> why the mass-delete guard stopped it
    spared: dict[str, int] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return all(run.status == SyncRun.Status.SUCCEEDED for run in self.runs) and not self.refused


def connection_rebuild(
    *, connection: Connection, actor: Actor, confirm_mass_delete: bool = False
) -> RebuildResult:
    """Re-read everything, then (only if every stream succeeded) tombstone what the re-read did not see.

    Live data is never removed first: the upsert overwrites in place, so readers see old or new rows,
    never none; a failed rebuild leaves the last good state plus whatever newer records it stored. The
    tombstones pass the id sweep's checks: the mass-delete guard over every stream first (any stream over
    it and nothing is tombstoned, the refusal audited, unless ``confirm_mass_delete``), then each candidate
    asked for again by id.
    """
    from .services import sync_connection

    started = timezone.now()
    seen: dict[str, set[str]] = {}
    runs = sync_connection(connection=connection, full=True, seen_ids=seen)
    result = RebuildResult(runs, {})
    kind = get_kind(connection)
    if not (result.succeeded and len(runs) == len(kind.streams)):
        audit_record(
            action="connection.rebuild_failed",
            actor=actor,
            object_type="connection",
            object_id=connection.slug,
            data={"runs": [f"{r.stream} {r.status}" for r in runs]},
        )
        return result
    limit = None if confirm_mass_delete else max_fraction(connection)
    candidates = [
        _candidates(connection, stream, seen.get(stream.name, set()), started) for stream in kind.streams
    ]
    for found in candidates:
        try:
            _guard(found, limit)
        except TooManyGone as exc:
            result.refused[found.stream.name] = str(exc)
    if result.refused:
        audit_record(
            action="connection.rebuild_refused",
            actor=actor,
            object_type="connection",
            object_id=connection.slug,
            data={"refused": result.refused},
        )
        return result
    client = kind.client()
    try:
        confirmed = [(found, _confirmed(found, client, started)) for found in candidates]
    except UpstreamError as exc:
        result.refused["*"] = f"could not confirm the deletes: {exc}"
        audit_record(
            action="connection.rebuild_failed",
            actor=actor,
            object_type="connection",
            object_id=connection.slug,
            data={"error": result.refused["*"]},
        )
        return result
    finally:
        client.close()
    changes = []
    with transaction.atomic():
        # Published again with the tombstones: a rebuild that dies before it is published by the next sync.
        SyncRun.objects.filter(pk__in=[run.pk for run in runs]).update(published_at=None)
        for found, gone in confirmed:
            name = found.stream.name
            ids = _tombstone(connection, found.stream, gone, started, timezone.now())
            result.tombstoned[name] = len(ids)
            result.spared[name] = len(found.rows) - len(gone)
            if ids:
                changes.append({found.stream.entity: set(ids)})
        audit_record(
            action="connection.rebuilt",
            actor=actor,
            object_type="connection",
            object_id=connection.slug,
            data={
                "tombstoned": result.tombstoned,
                "spared": {k: v for k, v in result.spared.items() if v},
                "confirmed_mass_delete": confirm_mass_delete,
            },
        )
    _announce(connection, runs, changes)
    return result


# ---- catching up after webhook downtime ---------------------------------------------------------------


def connection_catch_up(*, connection: Connection, since: dt.datetime, actor: Actor) -> dict[str, Any]:
    """Re-read through the kind's change feed (QuickBooks: CDC) what changed upstream since ``since`` and
    apply it version-guarded: after webhooks were down longer than the vendor retries them. Audited.
    NotImplementedError for kinds without a change feed; UpstreamError propagates (nothing half-applied)."""
    counts = get_kind(connection).catch_up(since)
    audit_record(
        action="connection.caught_up",
        actor=actor,
        object_type="connection",
        object_id=connection.slug,
        data={"since": since.isoformat(), "counts": {k: v for k, v in counts.items() if k != "since"}},
    )
    return counts


def connections_catch_up_due(*, now: dt.datetime | None = None) -> list[tuple[int, dt.datetime]]:
    """The enabled connections whose webhooks have been silent past their vendor's retry window, with
    where each catch-up starts (``ConnectorKind.catch_up_due``)."""
    now = now or timezone.now()
    due = []
    for connection in Connection.objects.filter(enabled=True).order_by("pk"):
        try:
            kind = get_kind(connection)
        except LookupError:
            continue
        if not kind.catches_up:
            continue
        since = kind.catch_up_due(now)
        if since is not None:
            due.append((connection.pk, since))
    return due
