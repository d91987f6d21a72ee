"""Connections as configuration (import/export) and the sync of their streams into entities."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from celery.schedules import crontab
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, OperationalError, transaction
from django.db import connection as db_connection
from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone

from apps.audit.services import Actor, audit_record
from apps.entities.changes import entities_changed_publish
from apps.entities.loaders import PreparedRows, prepare_rows, source_column, upsert_prepared
from apps.errors import Transient

from .drift import compare, field_paths
from .http import Prefetch, UpstreamError
from .kinds import KINDS, BadRecord, ConfigurationError, Page, Stream, UnknownStream, get_kind
from .kinds.base import READS, ConnectorKind, Record, cursor_key
from .kinds.rest.options import ENTITIES
from .kinds.rest.options import parse_options as parse_rest_options
from .models import Connection, QuarantinedRecord, SchemaDrift, StreamState, SyncRun

logger = logging.getLogger(__name__)

# A running sync that has not heartbeat for this long belongs to a dead worker.
STALE_AFTER = dt.timedelta(minutes=10)
SYNC_TASK = "apps.connectors.tasks.sync_connection_task"
RECONCILE_TASK = "apps.connectors.tasks.reconcile_connection_task"
# The id sweep's default schedule (options.reconcile_schedule overrides): nightly, off the quarter hours.
RECONCILE_SCHEDULE = "17 3 * * *"
COUNT_KEYS = ("pages", "seen", "inserted", "updated", "unchanged", "quarantined", "api_calls", "retries")
FILE_FIELDS = ("slug", "kind", "base_url", "credentials", "webhook_secret", "schedule", "options", "enabled")
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,50}$")

Progress = Callable[[str, int], None]


class SyncAlreadyRunning(Exception):
    pass


class ConnectionFileError(ValueError):
    """A connections file with problems; ``errors`` lists every one of them."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# ---- connections file --------------------------------------------------------------------------------


def _cron(schedule: str) -> dict[str, str]:
    parts = schedule.split()
    if len(parts) != 5:
        raise ValueError("needs five fields: minute hour day-of-month month day-of-week")
    fields = dict(zip(("minute", "hour", "day_of_month", "month_of_year", "day_of_week"), parts, strict=True))
    crontab(**fields)  # raises ValueError naming the bad field
    return fields


def _validate_item(index: int, item: Any, seen: set[str]) -> list[str]:
    if not isinstance(item, dict):
        return [f"item {index}: expected a mapping, got {type(item).__name__}"]
    where = f"item {index} ({item.get('slug', '?')})"
    errors = [f"{where}: unknown field {key!r}" for key in item if key not in FILE_FIELDS]
    slug = item.get("slug")
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        errors.append(f"{where}: slug must be 1-50 letters, digits, '-' or '_'")
    elif slug in seen:
        errors.append(f"{where}: slug {slug!r} appears twice")
    else:
        seen.add(slug)
    if item.get("kind") not in KINDS:
        errors.append(f"{where}: kind {item.get('kind')!r} is not one of {', '.join(sorted(KINDS))}")
    try:
        if item.get("kind") != "csv" or item.get("base_url"):  # an uploaded file has no upstream URL
            URLValidator(schemes=["http", "https"])(item.get("base_url") or "")
    except ValidationError:
        errors.append(f"{where}: base_url {item.get('base_url')!r} is not an http(s) URL")
    credentials = item.get("credentials", {})
    if not isinstance(credentials, dict) or not all(isinstance(v, str) for v in credentials.values()):
        errors.append(f"{where}: credentials must be a mapping of names to strings")
    secret = item.get("webhook_secret", "")
    if not isinstance(secret, str) and not (
        isinstance(secret, list) and all(isinstance(s, str) for s in secret)
    ):
        errors.append(f"{where}: webhook_secret must be a string or a list of strings (current first)")
    schedule = item.get("schedule", "")
    if not isinstance(schedule, str):
        errors.append(f"{where}: schedule must be a cron string")
    elif schedule.strip():
        try:
            _cron(schedule)
        except ValueError as exc:
            errors.append(f"{where}: schedule {schedule!r}: {exc}")
    if not isinstance(item.get("options", {}), dict):
        errors.append(f"{where}: options must be a mapping")
    elif item.get("kind") == "rest":
        try:
            parse_rest_options(item.get("options", {}))
        except ConfigurationError as exc:
            errors.append(f"{where}: {exc}")
    if not isinstance(item.get("enabled", True), bool):
        errors.append(f"{where}: enabled must be true or false")
    return errors


def _schedule_save(connection: Connection) -> None:
    """Keep the connection's django-celery-beat entry in step with its schedule."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    reconcile = str((connection.options or {}).get("reconcile_schedule") or RECONCILE_SCHEDULE)
    for name, task, schedule in (
        (f"sync connection {connection.slug}", SYNC_TASK, connection.schedule),
        # The sweep follows the sync: a connection nobody schedules is not swept either.
        (f"reconcile connection {connection.slug}", RECONCILE_TASK, reconcile if connection.schedule else ""),
    ):
        if not schedule.strip():
            PeriodicTask.objects.filter(name=name).update(enabled=False)
            continue
        cron, _ = CrontabSchedule.objects.get_or_create(**_cron(schedule), timezone=settings.TIME_ZONE)
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "crontab": cron,
                "args": json.dumps([connection.pk]),
                "enabled": connection.enabled,
            },
        )


@transaction.atomic
def connection_import(*, data: list[dict[str, Any]], actor: Actor) -> list[Connection]:
    """Create or update connections by slug from the connections file; audit what changed (never secrets).

    Credentials and webhook secrets a file leaves out are kept, so an exported file re-imports safely.
    """
    if not isinstance(data, list):
        raise ConnectionFileError(["the connections file must be a list of connections"])
    seen: set[str] = set()
    errors = [error for index, item in enumerate(data, 1) for error in _validate_item(index, item, seen)]
    if errors:
        raise ConnectionFileError(errors)
    result = []
    for item in data:
        connection = Connection.objects.select_for_update().filter(slug=item["slug"]).first()
        created = connection is None
        connection = connection or Connection(slug=item["slug"])
        changed = []
        for name, default in (
            ("kind", None),
            ("base_url", ""),
            ("schedule", ""),
            ("options", {}),
            ("enabled", True),
        ):
            value = item.get(name, default)
            if created or getattr(connection, name) != value:
                setattr(connection, name, value)
                changed.append(name)
        if "credentials" in item and (created or connection.credentials != item["credentials"]):
            connection.credentials = item["credentials"]
            changed.append("credentials")
        if "webhook_secret" in item:
            secrets = item["webhook_secret"]
            secrets = [secrets] if isinstance(secrets, str) and secrets else secrets or []
            if created or connection.webhook_secrets != secrets:
                connection.webhook_secrets = secrets
                changed.append("webhook secret")
        if changed:
            connection.save()
            _schedule_save(connection)
            audit_record(
                action="connection.created" if created else "connection.updated",
                actor=actor,
                object_type="connection",
                object_id=connection.pk,
                data={
                    "slug": connection.slug,
                    "kind": connection.kind,
                    "fields": changed,
                    **_public(connection),
                },
            )
        result.append(connection)
    return result


def _public(connection: Connection) -> dict[str, Any]:
    return {
        "base_url": connection.base_url,
        "schedule": connection.schedule,
        "options": connection.options,
        "enabled": connection.enabled,
    }


def connection_export() -> list[dict[str, Any]]:
    """Every connection in the file format, without credentials or webhook secrets."""
    out = []
    for connection in Connection.objects.order_by("slug"):
        item: dict[str, Any] = {"slug": connection.slug, "kind": connection.kind, **_public(connection)}
        if connection.enabled:
            del item["enabled"]
        out.append(item)
    return out


# ---- sync --------------------------------------------------------------------------------------------


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(worker: str) -> bool:
    """Whether ``host:pid`` names a process on this host that no longer exists (killed, crashed)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: only its heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _expire_lost_runs(connection: Connection, stream: str, now: dt.datetime) -> None:
    """Fail the stream's running runs whose worker is gone: no heartbeat for STALE_AFTER, or (same host)
    a process that no longer exists. Their committed pages and cursor stay; the next run resumes there."""
    stale_after = dt.timedelta(
        seconds=float(settings.FULCRUM.get("SYNC_STALE_AFTER_SECONDS", STALE_AFTER.total_seconds()))
    )
    running = SyncRun.objects.filter(
        connection=connection, stream=stream, status=SyncRun.Status.RUNNING
    ).values_list("pk", "heartbeat_at", "worker")
    # One read, usually empty: claiming is on every stream's path, including 1% incremental syncs.
    for pk, heartbeat_at, worker in running:
        if heartbeat_at < now - stale_after:
            error = f"no heartbeat for {stale_after.total_seconds():.0f} s: worker lost"
        elif worker and _process_gone(worker):
            error = f"worker {worker} is gone (killed or crashed); the next run resumes at its cursor"
        else:
            continue
        # Guarded on the status: the worker may have finished meanwhile.
        SyncRun.objects.filter(pk=pk, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.FAILED, finished_at=now, error=error
        )


def _claim(connection: Connection, stream: str, full: bool) -> SyncRun:
    now = timezone.now()
    _expire_lost_runs(connection, stream, now)
    try:
        with transaction.atomic():
            return SyncRun.objects.create(
                connection=connection,
                stream=stream,
                full=full,
                started_at=now,
                heartbeat_at=now,
                counts=dict.fromkeys(COUNT_KEYS, 0),
                worker=_worker(),
            )
    except IntegrityError as exc:
        if "one_running_sync_per_stream" not in str(exc):
            raise
        raise SyncAlreadyRunning(f"{connection.slug}/{stream} is already syncing") from None


class _RunLost(Exception):
    """Our run was expired by another worker (heartbeat too old): stop without writing more."""


@dataclass(frozen=True)
class _PreparedPage:
    """A page with the Python work of storing it done: normalised, checked, encoded, its fields listed."""

    page: Page
    rows: list[Record]
    raws: list[Record]
    bad: list[tuple[Record, str]]
    loaded: PreparedRows
    paths: set[str]
    versions: frozenset[int] = frozenset()  # the records' (id, version) hashes: what the page brings


# A pager that answers "more" with pages this run has already read (a page number the upstream ignores, a
# cursor token it hands back unchanged, a keyset that cannot leave a tie) would loop for ever or, once it
# gives up, end a run that read nothing new as a success. This many pages in a row bringing no record the
# run has not read stop it as failed; one repeated page (vendors do that) is fine.
STALL_PAGES = 3


class _Stalled(Exception):
    """The pager keeps answering with records this run already read."""


class _StallWatch:
    """Counts consecutive pages that bring nothing new to the run (by record id and version)."""

    def __init__(self) -> None:
        self.read: set[int] = set()
        self.idle = 0

    def check(self, prepared: _PreparedPage, cursor: dict[str, Any]) -> None:
        fresh = prepared.versions - self.read
        self.read |= fresh
        self.idle = 0 if fresh else self.idle + 1
        if self.idle >= STALL_PAGES:
            raise _Stalled(
                f"stalled: {self.idle} pages in a row brought no record this run had not read, while the "
                f"upstream kept answering with more (cursor {cursor.get('updated_at') or 'start'}); "
                "stopped as failed, the next run resumes at the saved cursor"
            )


# What a stream's ``normalise`` may raise on a value it did not expect (``int("1e5")``, ``None["id"]``, a
# list where an object was documented): the record is quarantined with the error, the stream goes on.
UNREADABLE = (ValueError, TypeError, ArithmeticError, LookupError, AttributeError)


def record_normalise(stream: Stream, raw: Any) -> tuple[Record | None, str]:
    """The entity fields of one upstream record, or None and why it cannot be stored (its quarantine reason).

    ``BadRecord`` is the streams' own way to refuse a record; any other error reading a value is caught
    as well, so one unexpected value upstream (every sync page, webhook and CSV row passes here) costs
    that record only, never the run or the delivery. It is logged with its traceback: a stream refusing
    every record this way is a bug, and the run's ``quarantined`` count shows it.
    """
    try:
        return stream.normalise(raw), ""
    except BadRecord as exc:
        return None, exc.reason
    except UNREADABLE as exc:
        logger.warning("stream %s could not read a record", stream.name, exc_info=True)
        return None, f"unreadable value: {type(exc).__name__}: {exc}"[:2000]


def record_external_id(raw: Any) -> str:
    """The upstream id a quarantined record names, when it has one where vendors put it."""
    if not isinstance(raw, dict):
        return ""
    return str(raw.get("id") or raw.get("Id") or raw.get("external_id") or "")[:64]


def jsonable(value: Any) -> Any:
    """``value`` as PostgreSQL's jsonb takes it: Python's JSON reader accepts NaN and Infinity (a vendor
    may send them), jsonb does not, so they are kept as the strings ``"NaN"``, ``"Infinity"``; other
    non-JSON values (dates, decimals) as their text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def quarantine_records(
    connection: Connection, stream: str, bad: list[tuple[Any, str]], *, run: SyncRun | None = None
) -> None:
    """Keep refused records with their reasons (one insert); payloads made storable first."""
    QuarantinedRecord.objects.bulk_create(
        QuarantinedRecord(
            connection=connection,
            stream=stream,
            run=run,
            payload=jsonable(raw),
            reason=reason,
            external_id=record_external_id(raw),
        )
        for raw, reason in bad
    )


def _prepare_page(stream: Stream, page: Page) -> _PreparedPage:
    """Everything of ``_store_page`` that needs no database: run on the read-ahead thread, it overlaps the
    previous page's upsert (the sync alternated between its own CPU and the database's)."""
    rows, raws, bad = [], [], []
    for raw in page.records:
        row, reason = record_normalise(stream, raw)
        if row is None:
            bad.append((raw, reason))
        else:
            rows.append(row)
            raws.append(raw)
    paths = field_paths(page.records) if page.records else set()
    versions = frozenset(
        [hash((row.get("external_id"), row.get("source_updated_at"))) for row in rows]
        # A refused record may lack an id: its whole content tells one from another (they are few).
        + [hash(json.dumps(jsonable(raw), sort_keys=True)) for raw, _ in bad]
    )
    return _PreparedPage(page, rows, raws, bad, prepare_rows(stream.model, rows), paths, versions)


def _prepared_pages(stream: Stream, pages: Iterator[Page]) -> Iterator[_PreparedPage]:
    """The read-ahead's producer: each page prepared. Closing it closes the stream's pager too, so a run
    that stops early ends the pager's own threads (Procore's project readers) at once."""
    try:
        for page in pages:
            yield _prepare_page(stream, page)
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def _store_page(
    run: SyncRun,
    stream: Stream,
    page: Page,
    counts: dict[str, Any],
    learning: bool = False,
    seen_ids: set[str] | None = None,
    prepared: _PreparedPage | None = None,
    *,
    durable: bool = True,
) -> list[int]:
    """Upsert one page, quarantine its bad records and save the cursor: all or nothing, in a transaction
    run again when PostgreSQL ends it in a deadlock (``retried``): its rows are locked in the page's order,
    while a webhook or another connection's publish may lock some of them in another. ``counts`` takes
    the stored attempt's counts only.

    ``learning``: the stream's first run, which learns its upstream fields rather than reporting drift.
    ``seen_ids`` collects the external ids read (a rebuild tombstones the rest). ``prepared``: the page's
    ``_prepare_page``, when the caller did it ahead (else it is done here, once for every attempt).

    ``durable=False`` (a sync's pages) commits without waiting for the WAL flush. A page is a copy of
    upstream data and its cursor travels in the same transaction, so a server crash can only lose the
    last few pages and their cursor together (PostgreSQL recovers a prefix of the commits), and the next
    run reads them again; every later synchronous commit (the run's end, the evaluation marks) flushes
    them first. Saves an fsync per page. An upload (CSV) stays durable: there is nothing to read again.
    """
    ready = prepared if prepared is not None else _prepare_page(stream, page)

    def attempt() -> tuple[list[int], dict[str, Any]]:
        tried = dict(counts)
        return _store_page_once(run, stream, ready, tried, learning, seen_ids, durable), tried

    changed, stored = retried(f"storing a page of {run.connection.slug}/{stream.name}", attempt)
    counts.update(stored)
    return changed


def _store_page_once(
    run: SyncRun,
    stream: Stream,
    prepared: _PreparedPage,
    counts: dict[str, Any],
    learning: bool,
    seen_ids: set[str] | None,
    durable: bool,
) -> list[int]:
    """One attempt of ``_store_page``, inside its transaction."""
    if not durable:
        with db_connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")
    connection, page = run.connection, prepared.page
    now = timezone.now()
    rows, raws, bad = prepared.rows, prepared.raws, list(prepared.bad)
    if seen_ids is not None:
        seen_ids.update(row["external_id"] for row in rows)
    result = upsert_prepared(prepared.loaded, source_id=connection.pk, now=now)
    by_row = {id(row): raw for row, raw in zip(rows, raws, strict=True)}
    bad += [(by_row[id(row)], reason) for row, reason in result.rejected]
    quarantine_records(connection, stream.name, bad, run=run)
    # The saved cursor's position only, not the cursor: a Procore cursor maps every project to its own
    # (≈ 0.5 MB at 10k projects), and reading it back on every page cost as much as writing it.
    state = (
        StreamState.objects.select_for_update()
        .defer("cursor")
        .annotate(saved_at=KT("cursor__updated_at"), saved_id=KT("cursor__id"))
        .get(connection=connection, stream=stream.name)
    )
    saved = {"updated_at": state.saved_at, "id": state.saved_id or ""} if state.saved_at else {}
    update = ["record_count", "fields", "missing_fields"]
    if cursor_key(page.cursor) > cursor_key(saved):  # else the saved cursor is as far on: kept
        state.cursor = page.cursor
        update.append("cursor")
    state.record_count += result.inserted
    _note_drift(run, stream, page, state, learning, prepared.paths)
    state.save(update_fields=update)
    counts["pages"] += 1
    counts["seen"] += len(page.records)
    counts["inserted"] += result.inserted
    counts["updated"] += result.updated
    counts["unchanged"] += result.unchanged
    counts["quarantined"] += len(bad)
    if not SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
        counts=counts, heartbeat_at=now
    ):
        raise _RunLost(f"{connection.slug}/{stream.name}: run {run.pk} was expired by another worker")
    return result.changed_ids


def _note_drift(
    run: SyncRun, stream: Stream, page: Page, state: StreamState, learning: bool, paths: set[str]
) -> None:
    """Record a drift finding when the page's upstream fields differ from what the stream has seen."""
    if not page.records:
        return
    drift = compare(state.fields or [], state.missing_fields or [], paths, len(page.records))
    if (drift.new or drift.missing) and not learning:
        first = page.records[0] if isinstance(page.records[0], dict) else {}
        SchemaDrift.objects.create(
            connection=run.connection,
            stream=stream.name,
            run=run,
            new_fields=drift.new,
            missing_fields=drift.missing,
            example_external_id=str(first.get("id") or first.get("Id") or "")[:64],
        )
        logger.warning(
            "schema drift %s/%s: new %s, missing %s",
            run.connection.slug,
            stream.name,
            drift.new,
            drift.missing,
        )
    state.fields, state.missing_fields = drift.known, drift.still_missing


def _finish(
    run: SyncRun, status: str, counts: dict[str, Any], error: str = "", *, fresh: bool = True
) -> None:
    """End the run; ``fresh``: a success makes the stream's data as fresh as the run's start (not a
    reconciliation share, which reads a few projects and no changes)."""
    now = timezone.now()
    run.status, run.counts, run.error, run.finished_at = status, counts, error, now
    with transaction.atomic():
        SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
            status=status, counts=counts, error=error, finished_at=now
        )
        if status == SyncRun.Status.SUCCEEDED and fresh:
            # Data is as fresh as the run's start: later upstream edits are the next run's.
            StreamState.objects.filter(connection=run.connection, stream=run.stream).update(
                last_success_at=run.started_at
            )


def _sync_stream(
    connection: Connection,
    stream_name: str,
    full: bool,
    progress: Progress | None,
    seen_ids: set[str] | None = None,
    reads: str = "both",
) -> tuple[SyncRun, set[int]]:
    stream = get_kind(connection).stream(stream_name)
    stream.reads = reads
    run = _claim(connection, stream_name, full)
    state, _ = StreamState.objects.get_or_create(connection=connection, stream=stream_name)
    learning = not state.fields
    counts: dict[str, Any] = {**dict.fromkeys(COUNT_KEYS, 0), "rate_limited_seconds": 0.0}
    changed: set[int] = set()
    client = None
    status, error = SyncRun.Status.SUCCEEDED, ""
    try:
        client = stream.kind.client()
        # The next page is fetched and prepared while this one is stored; an upstream error surfaces when
        # its page is asked for, after every earlier page and its cursor were committed.
        pages = stream.pages(client, {} if full else dict(state.cursor or {}), full)
        watch = _StallWatch()
        with Prefetch(_prepared_pages(stream, pages), client) as prepared_pages:
            for prepared in prepared_pages:
                counts.update(_client_counts(client))
                page = prepared.page
                watch.check(prepared, page.cursor)
                changed.update(
                    _store_page(run, stream, page, counts, learning, seen_ids, prepared, durable=False)
                )
                if progress:
                    progress(stream_name, len(page.records))
    except UpstreamError as exc:
        # Committed pages stay, and so does their cursor: the next run resumes from there.
        status = SyncRun.Status.PARTIAL if isinstance(exc, Transient) else SyncRun.Status.FAILED
        error = str(exc)
    except (ConfigurationError, _RunLost, _Stalled) as exc:
        status, error = SyncRun.Status.FAILED, str(exc)
    except Exception as exc:
        if client:
            counts.update(_client_counts(client))
        _finish(run, SyncRun.Status.FAILED, counts, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if client:
            client.close()
    if client:
        counts.update(_client_counts(client))
    _finish(run, status, counts, error, fresh=reads != "share")
    logger.info("sync %s/%s %s %s", connection.slug, stream_name, status, counts)
    return run, changed


def _client_counts(client: Any) -> dict[str, Any]:
    stats = client.stats
    return {
        "api_calls": stats.api_calls,
        "retries": stats.retries,
        "rate_limited_seconds": round(stats.rate_limited_seconds, 3),
    }


def sync_stream(
    *, connection: Connection, stream: str, full: bool = False, progress: Progress | None = None
) -> SyncRun:
    """Sync one stream now. Raises SyncAlreadyRunning if another run of it is in progress.

    ``full`` re-reads everything from the beginning (and deletes nothing); otherwise the read starts at the
    saved cursor less a short lookback.
    """
    run, _changed = _sync_stream(connection, stream, full, progress)
    return run


# Rows a run must insert before its table's planner statistics are refreshed.
ANALYZE_AFTER_INSERTS = 1000


def _refresh_statistics(kind: ConnectorKind, runs: list[SyncRun]) -> None:
    """ANALYZE tables a run just filled: with the empty-table estimates autovacuum has not yet replaced,
    PostgreSQL plans linking and fact queries as nested loops, quadratic in the data (measured: 190 s
    instead of 2 s for an incremental sync at 10k projects)."""
    tables = {
        kind.stream(run.stream).model._meta.db_table
        for run in runs
        if int(run.counts.get("inserted", 0)) >= ANALYZE_AFTER_INSERTS
    }
    with db_connection.cursor() as cursor:
        for table in sorted(tables):
            cursor.execute(f"ANALYZE {db_connection.ops.quote_name(table)}")


def sync_connection(
    *,
    connection: Connection,
    full: bool = False,
    streams: list[str] | None = None,
    progress: Progress | None = None,
    seen_ids: dict[str, set[str]] | None = None,
    reads: str = "both",
) -> list[SyncRun]:
    """Sync the kind's streams in order, link entities, and tell the rules what changed.

    ``seen_ids``, when given, collects each stream's external ids read (a rebuild tombstones the rest).
    Stops at the first stream that does not succeed: an upstream that ran out our retries on one stream
    would do the same on the next, and linking what was committed is still worth doing.

    ``reads`` (incremental runs; ``Stream.reads``): "both" reads the changes and the streams' reconciliation
    share (a run by hand), "changes" the changes only (the scheduled task, which then queues the share as
    ``reconcile_share_task``), "share" only the share of the streams that have one.
    """
    if reads not in READS or (full and reads != "both"):
        raise ValueError(f"reads must be one of {READS} (a full sync reads everything): {reads!r}")
    kind = get_kind(connection)
    wanted = [kind.stream(name).name for name in streams] if streams else None
    runs: list[SyncRun] = []
    changes: dict[str, set[int]] = {}
    selected = [
        stream
        for stream in kind.streams
        if (wanted is None or stream.name in wanted) and (reads != "share" or stream.has_share)
    ]
    analysed: set[type[Any]] = set()
    for index, stream in enumerate(selected):
        stream_seen = seen_ids.setdefault(stream.name, set()) if seen_ids is not None else None
        run, changed = _sync_stream(connection, stream.name, full, progress, stream_seen, reads)
        runs.append(run)
        # The stream's own set, not a copy: a first sync's change sets hold every id it stored.
        if stream.entity not in changes:
            changes[stream.entity] = changed
        else:
            changes[stream.entity] |= changed
        if run.status != SyncRun.Status.SUCCEEDED:
            break
        # A table is analysed once its last stream is done, before the streams after it: children join
        # their parents (projects, vendors) as they are inserted, planned on these statistics.
        if stream.model not in {later.model for later in selected[index + 1 :]}:
            _refresh_statistics(kind, [r for r in runs if kind.stream(r.stream).model is stream.model])
            analysed.add(stream.model)
    _refresh_statistics(kind, [r for r in runs if kind.stream(r.stream).model not in analysed])
    # Incremental: link only where this sync's changes can have moved a link; a full sync re-links all.
    changes_publish(connection, runs, changes, scoped=not full)
    return runs


# PostgreSQL's deadlock and serialization failures (SQLSTATE 40P01, 40001): the transaction was rolled back
# whole, so its work is run again at once, up to this many times in all. Any other error is raised as it came.
RETRIED_ATTEMPTS = 3
_RETRIED = frozenset({"40P01", "40001"})
_T = TypeVar("_T")


def retried(what: str, work: Callable[[], _T]) -> _T:
    """``work()`` in a transaction of its own, run again after a deadlock or serialization failure (logged
    with ``what``). Meant for work outside any transaction: inside one, ``work`` runs in a savepoint, whose
    rollback keeps the locks taken before it, so the cycle may close again."""
    for attempt in range(1, RETRIED_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return work()
        except OperationalError as exc:
            if attempt == RETRIED_ATTEMPTS or getattr(exc.__cause__, "sqlstate", None) not in _RETRIED:
                raise
            logger.warning("%s: %s; trying again", what, exc)
    raise AssertionError("unreachable: the last attempt returns or raises")


def changes_publish(
    connection: Connection, runs: list[SyncRun], changes: dict[str, set[int]], *, scoped: bool = True
) -> None:
    """Link and mark for evaluation what ``runs`` stored (``changes``), and what earlier runs of the
    connection stored but never published (their worker died after committing pages, or their publish
    failed), then record every one of them published: one transaction, so a run is published whole or
    not at all, and never twice.

    ``scoped``: link only around the changes (``link_entities``' ``touched``); a full sync re-links all. A
    deadlock (a concurrent publish or webhook linking the same rows in another order) is tried again
    (``retried``); any other error leaves the runs unpublished, for the connection's next sync.
    """
    retried(f"publishing {connection.slug}'s changes", lambda: _publish(connection, runs, changes, scoped))


def _publish(connection: Connection, runs: list[SyncRun], changes: dict[str, set[int]], scoped: bool) -> None:
    own = [run.pk for run in runs]
    # Locked, so that two publishes of the connection (a sync and its reconciliation share) never both
    # take a run over; one still running is its worker's to publish.
    earlier = list(
        SyncRun.objects.unpublished()
        .select_for_update(skip_locked=True)
        .filter(connection=connection)
        .exclude(pk__in=own)
        .values_list("pk", "stream", "started_at")
    )
    if earlier:
        for key, ids in _stored_since(connection, earlier).items():
            changes.setdefault(key, set()).update(ids)
    # What was stored (sorted lists: linking adds to ``changes``, and a list is a quarter of a set).
    touched = {key: sorted(ids) for key, ids in changes.items()} if scoped else None
    entities_changed_publish(changes, trigger="sync", touched=touched)
    SyncRun.objects.filter(pk__in=own + [pk for pk, _, _ in earlier]).update(published_at=timezone.now())


def _stored_since(connection: Connection, runs: list[tuple[int, str, dt.datetime]]) -> dict[str, set[int]]:
    """What unpublished runs may have stored or tombstoned: their streams' records of the connection
    written since the earliest of them started (a sync sets ``synced_at`` on each row it inserts or
    changes, a sweep ``deleted_at`` on each tombstone). A later write by a webhook is found too, and
    marking it again is harmless. Read whole, without an index: this runs only after a failure."""
    kind = get_kind(connection)
    since: dict[tuple[type[Any], str], dt.datetime] = {}
    for _pk, name, started_at in runs:
        entity = name.removeprefix("csv:")  # an upload's run is named for the entity it imported
        if entity != name and entity in ENTITIES:
            key: tuple[type[Any], str] = (ENTITIES[entity], entity)
        else:
            try:
                stream = kind.stream(name)
            except UnknownStream:  # a stream the kind no longer has: nothing of it is read any more
                logger.warning("%s: unpublished run of unknown stream %r skipped", connection.slug, name)
                continue
            key = (stream.model, stream.entity)
        since[key] = min(since.get(key, started_at), started_at)
    found: dict[str, set[int]] = {}
    for (model, entity), started_at in since.items():
        ids = model._default_manager.filter(
            Q(synced_at__gte=started_at) | Q(deleted_at__gte=started_at),
            **{source_column(model): connection.pk},
        ).values_list("pk", flat=True)
        found.setdefault(entity, set()).update(ids)
    return found
