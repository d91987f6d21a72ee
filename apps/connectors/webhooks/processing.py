"""Processing stored deliveries: claim the row, fetch what changed, apply it version-guarded, tell the rules.

Events are hints, delivered at least once and out of order. Where the vendor sends ids (HubSpot, QuickBooks,
Procore) the current record is fetched and applied through ``upsert_rows``, which only ever overwrites with a
newer version and writes nothing for unchanged content; a record asked for and no longer found upstream,
and every delete event, becomes a tombstone (``deleted_at``) guarded the same way; a merge (QuickBooks)
tombstones the merged-away record and points it at the survivor. Events a delivery carries for things not
synced are counted on the row (``summary["ignored_types"]``); ``apply_changes`` is shared with the
QuickBooks CDC catch-up.
Standard Webhooks (``rest``) deliveries carry the record itself, or only its id (fetched through the
stream's ``detail_path``). All writes of one delivery, its links and its "processed" mark commit together:
a worker dying midway leaves the row ``processing`` for the sweeper, and nothing half-applied.

A claim is a lease: a row ``processing`` (or ``received``) for longer than ``WEBHOOK_LEASE_SECONDS`` is
re-queued by the sweeper (beat, every ``WEBHOOK_SWEEP_SECONDS``), which is how the webhook of a SIGKILLed
worker gets processed within seconds: Redis only redelivers an unacknowledged message after its visibility
timeout, an hour here, because that timeout must outlast every countdown and every long task. Each claim
counts an attempt, and a holder finishes only while the attempt it claimed is still the row's (a fence):
a slow holder overtaken by the sweeper rolls its transaction back instead of applying twice.

A burst is drained in batches (``process_deliveries``, below): a delivery's task also claims the
deliveries of its connection waiting untouched, and applies them in one transaction with a savepoint each.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection as db
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.connectors.kinds import (
    BadRecord,
    ConnectorKind,
    Stream,
    get_kind,
)
from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.ratelimit import RateBudgetDeferred
from apps.connectors.services import quarantine_records, record_normalise
from apps.entities.changes import entities_changed_publish, entities_changes_collected
from apps.entities.loaders import source_column, upsert_rows
from apps.entities.models import Client, Project
from apps.entities.resolution import entity_merge
from apps.errors import Permanent, Transient

from . import schemes
from .schemes import Hint

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6  # claims of one delivery, task retries and sweeper re-queues together (not budget deferrals)
SWEEP_BATCH = 500
# Failures that trying again cannot fix (the row stays failed with its error for a person to see): the
# project's ``Permanent`` (an unknown kind or stream, a misconfigured connection, a malformed body, a vendor's
# 4xx), and a kind that cannot fetch by id. Anything else is retried, ``MAX_ATTEMPTS`` in all.
PERMANENT = (Permanent, NotImplementedError)
Status = WebhookDelivery.Status
MERGE_ACTOR = "system:webhooks"
FETCHED = ("upsert", "merge")  # hints whose record is read again upstream (a merge: the survivor)


# A row never claimed is almost always just queued behind others (a burst): re-queueing it at the lease
# would only add duplicate messages to the backlog. Its message is lost only with a killed worker's
# countdown (a deferral), which can wait this long.
UNCLAIMED_AFTER = dt.timedelta(minutes=2)


def lease() -> dt.timedelta:
    """How long a claim (or a queued, unclaimed row) is trusted before the sweeper queues the row again."""
    return dt.timedelta(seconds=float(settings.FULCRUM.get("WEBHOOK_LEASE_SECONDS", 30.0)))


class LeaseLost(Exception):
    """The sweeper gave this delivery to another attempt while we held it: ours must not commit."""


@dataclass
class DeliveryResult:
    status: str  # processed | failed | skipped | deferred
    retry: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    error: str = ""
    retry_after: float | None = None  # the upstream's advice (Retry-After, a rate-limit reset)
    deferred: float = 0.0  # seconds until the shared rate budget allows a call (status "deferred")


def claim(delivery_id: int) -> WebhookDelivery | None:
    """Take the row for processing (received/failed → processing) unless someone else has it: a batch
    of one (``claim_batch``)."""
    claimed = claim_batch(delivery_id, 1)
    return claimed[0] if claimed else None


def process_delivery(delivery_id: int) -> DeliveryResult:
    """Process one stored delivery alone; never raises for the delivery's own failures (they are
    recorded). The task processes a batch (``process_deliveries``)."""
    return process_deliveries(delivery_id, limit=1)[delivery_id]


def _held(delivery: WebhookDelivery) -> models.QuerySet[WebhookDelivery]:
    """The row while this attempt still holds it (the fence)."""
    held = WebhookDelivery.objects.filter(pk=delivery.pk, status=Status.PROCESSING)
    return held.filter(attempts=delivery.attempts)


def _process_claimed(delivery: WebhookDelivery, prepared: Prepared | None = None) -> DeliveryResult:
    try:
        counts = _process(delivery, prepared)
    except LeaseLost:
        return DeliveryResult("skipped", error="lease lost to a newer attempt")
    except RateBudgetDeferred as exc:
        return _deferred(delivery, exc)
    except Exception as exc:
        return _failed(delivery, exc)
    return DeliveryResult("processed", counts=counts)


def _deferred(delivery: WebhookDelivery, exc: RateBudgetDeferred) -> DeliveryResult:
    # Not a failure: nothing was asked upstream. The attempt is given back, so a long spent budget
    # cannot use up the row's attempts; the task re-queues the delivery for when the budget allows a call.
    _held(delivery).update(
        status=Status.RECEIVED,
        attempts=F("attempts") - 1,
        status_changed_at=timezone.now(),
        error=f"deferred {exc.retry_after or 0:.1f} s: rate budget spent",
    )
    return DeliveryResult("deferred", deferred=float(exc.retry_after or 0.0))


def _failed(delivery: WebhookDelivery, exc: Exception) -> DeliveryResult:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    _held(delivery).update(status=Status.FAILED, error=error, status_changed_at=timezone.now())
    retry = not isinstance(exc, PERMANENT) and delivery.attempts < MAX_ATTEMPTS
    after = exc.retry_after if isinstance(exc, Transient) else None
    logger.warning("webhook delivery %s failed (attempt %s): %s", delivery.pk, delivery.attempts, error)
    return DeliveryResult("failed", retry=retry, error=error, retry_after=after)


@dataclass
class Prepared:
    """A claimed delivery's events, read from its body (no upstream call, no database write yet)."""

    delivery: WebhookDelivery
    kind: ConnectorKind
    by_stream: dict[str, list[Hint]]
    ignored: dict[str, int]

    @property
    def asked(self) -> dict[str, set[str]]:
        return _asked(self.by_stream)

    def finish(self, now: dt.datetime) -> Callable[[dict[str, int]], None]:
        """Mark the row processed, inside the applying transaction, while this attempt still holds it."""

        def finish(counts: dict[str, int]) -> None:
            finished = _held(self.delivery).update(
                status=Status.PROCESSED,
                processed_at=now,
                status_changed_at=now,
                error="",
                summary=self.summary(counts),
            )
            if not finished:
                raise LeaseLost(self.delivery.pk)  # rolls back this attempt's writes: the newer one applies
            self.kind.after_webhook(self.delivery)

        return finish

    def summary(self, counts: dict[str, int]) -> dict[str, Any]:
        return {**counts, "ignored": sum(self.ignored.values()), "ignored_types": self.ignored}

    def result_counts(self, counts: dict[str, int]) -> dict[str, int]:
        # merged/ignored only when there were any: most kinds' deliveries never have them.
        counts = dict(counts)
        if not counts.get("merged"):
            counts.pop("merged", None)
        if self.ignored:
            counts["ignored"] = sum(self.ignored.values())
        return counts


def prepare(delivery: WebhookDelivery, kind: ConnectorKind | None = None) -> Prepared:
    kind = kind or get_kind(delivery.connection)
    payload = schemes.decode(bytes(delivery.body))
    parsed = kind.webhook_events(payload, delivery.connection.options or {}, delivery.headers or {})
    by_stream: dict[str, list[Hint]] = defaultdict(list)
    for hint in parsed.hints:
        by_stream[hint.stream].append(hint)
    for name in by_stream:
        kind.stream(name)  # an unknown stream fails this delivery here, before anything is read or written
    return Prepared(delivery, kind, dict(by_stream), parsed.ignored)


def _process(delivery: WebhookDelivery, prepared: Prepared | None = None) -> dict[str, int]:
    p = prepared or prepare(delivery)
    # Upstream calls happen before the transaction: no database locks are held while we wait on a vendor.
    fetched = _fetch(p.kind, p.by_stream)
    now = timezone.now()
    counts = apply_changes(
        delivery.connection,
        p.kind,
        p.by_stream,
        fetched,
        now,
        trigger="webhook",
        finish=p.finish(now),
        since=delivery.received_at,
    )
    return p.result_counts(counts)


def _new_counts(by_stream: dict[str, list[Hint]]) -> dict[str, int]:
    return {
        "hints": sum(len(h) for h in by_stream.values()),
        "changed": 0,
        "tombstoned": 0,
        "quarantined": 0,
        "merged": 0,
    }


def apply_changes(
    connection: Connection,
    kind: ConnectorKind,
    by_stream: dict[str, list[Hint]],
    fetched: dict[str, list[dict[str, Any]]],
    now: dt.datetime,
    *,
    trigger: str,
    finish: Callable[[dict[str, int]], None] | None = None,
    since: dt.datetime | None = None,
) -> dict[str, int]:
    """Apply hints and the records fetched for them in one transaction: version-guarded upserts, tombstones,
    merges, links, the rules told (``since``: when the change arrived); ``finish(counts)`` runs last inside
    the same transaction."""
    counts = _new_counts(by_stream)
    with transaction.atomic(), entities_changes_collected(trigger=trigger, since=since):
        changes = _apply_streams(connection, kind, by_stream, fetched, now, counts)
        # A repeat or an older version changed nothing: nothing new to link or evaluate.
        entities_changed_publish(changes, trigger=trigger)
        if finish is not None:
            finish(counts)
    return counts


def _apply_streams(
    connection: Connection,
    kind: ConnectorKind,
    by_stream: dict[str, list[Hint]],
    fetched: dict[str, list[dict[str, Any]]],
    now: dt.datetime,
    counts: dict[str, int],
) -> dict[str, set[int]]:
    """Every stream's upserts, tombstones and merges (in the caller's transaction); the changed ids."""
    changes: dict[str, set[int]] = {}
    for name, stream_hints in by_stream.items():
        stream = kind.stream(name)
        changed = _apply(connection, stream, stream_hints, fetched.get(name, []), now, counts)
        changed |= _merge(connection, stream, stream_hints, now, counts)
        if changed:
            changes.setdefault(stream.entity, set()).update(changed)
    counts["changed"] = sum(len(ids) for ids in changes.values())
    return changes


def _asked(by_stream: dict[str, list[Hint]]) -> dict[str, set[str]]:
    """Per stream, the ids whose current record is read upstream (the events that carry no record)."""
    wanted = {
        name: {h.external_id for h in hints if h.op in FETCHED and h.data is None}
        for name, hints in by_stream.items()
    }
    return {name: ids for name, ids in wanted.items() if ids}


def _fetch(kind: ConnectorKind, by_stream: dict[str, list[Hint]]) -> dict[str, list[dict[str, Any]]]:
    wanted = {name: sorted(ids) for name, ids in _asked(by_stream).items()}
    if not wanted:
        return {}
    client = kind.client()
    try:
        fetched = {}
        for name, ids in wanted.items():
            # Where the vendor scopes a record under a parent (Procore: its project), the event says which.
            scopes = {h.external_id: h.scope for h in by_stream[name] if h.scope}
            fetched[name] = kind.fetch_records(client, kind.stream(name), ids, scopes)
        return fetched
    finally:
        client.close()


# ---- batches ---------------------------------------------------------------------------------------------
#
# A burst (100 deliveries a second) is drained in batches: the task of one delivery also claims the other
# deliveries of its connection that wait untouched, reads their records upstream in one round of calls and
# applies them in one transaction, a savepoint each, with one linking, one marking for the rules and one
# "processed" statement. Every guarantee of a single delivery holds for each: its own claim, attempt and
# fence (the rows still held are locked first, for the whole transaction: a lease lost before that skips
# that delivery only, and none can be lost after), its own failure recorded and retried, a spent rate
# budget deferring it without spending its attempt. Their own task messages then find them taken and skip.

_CLAIM_BATCH = """
    WITH mine AS (
        UPDATE {table} SET status = 'processing', attempts = attempts + 1, status_changed_at = %(now)s,
                           error = ''
         WHERE id = %(id)s AND status IN ('received', 'failed') AND attempts < %(max)s
        RETURNING id, attempts
    ), mates AS (
        UPDATE {table} SET status = 'processing', attempts = attempts + 1, status_changed_at = %(now)s
         WHERE id IN (
            SELECT id FROM {table}
             WHERE connection_id = (SELECT connection_id FROM {table} WHERE id = %(id)s)
               AND status = 'received' AND error = '' AND attempts < %(max)s AND id <> %(id)s
               AND %(more)s > 0 AND NOT EXISTS (SELECT FROM mine WHERE mine.attempts > 1)
             ORDER BY id LIMIT %(more)s FOR UPDATE SKIP LOCKED)
        RETURNING id
    )
    SELECT id FROM mine UNION ALL SELECT id FROM mates
"""


def batch_size() -> int:
    return max(1, int(settings.FULCRUM.get("WEBHOOK_BATCH_SIZE", 50)))


def claim_batch(delivery_id: int, limit: int) -> list[WebhookDelivery]:
    """Claim ``delivery_id`` as :func:`claim` does, and up to ``limit - 1`` deliveries of its connection
    that wait untouched (received, never tried: not a deferred or re-queued one, which has its own timing),
    oldest first, skipping rows someone else is taking. A retry (the delivery failed before) is claimed
    alone: a delivery that failed a batch once does not take others down with it again. The claimed rows,
    oldest first; ``delivery_id`` is among them only if it was claimed."""
    sql = _CLAIM_BATCH.format(table=db.ops.quote_name(WebhookDelivery._meta.db_table))
    params: dict[str, Any] = {
        "id": delivery_id,
        "now": timezone.now(),
        "max": MAX_ATTEMPTS,
        "more": max(0, limit - 1),
    }
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [pk for (pk,) in cursor.fetchall()]
    if not ids:
        return []
    return list(WebhookDelivery.objects.select_related("connection").filter(pk__in=ids).order_by("pk"))


def process_deliveries(delivery_id: int, *, limit: int | None = None) -> dict[int, DeliveryResult]:
    """Process ``delivery_id`` together with up to ``limit - 1`` waiting deliveries of its connection
    (``WEBHOOK_BATCH_SIZE``); the outcome of each delivery claimed, and ``delivery_id``'s ("skipped" when
    someone else had it). Never raises for the deliveries' own failures (they are recorded)."""
    claimed = claim_batch(delivery_id, batch_size() if limit is None else limit)
    results: dict[int, DeliveryResult] = {}
    if delivery_id not in {d.pk for d in claimed}:
        results[delivery_id] = DeliveryResult("skipped")
    if len(claimed) == 1:
        results[claimed[0].pk] = _process_claimed(claimed[0])
    elif claimed:
        results.update(_process_batch(claimed))
    return results


def _process_batch(deliveries: list[WebhookDelivery]) -> dict[int, DeliveryResult]:
    results: dict[int, DeliveryResult] = {}
    kind = get_kind(deliveries[0].connection)
    batch: list[Prepared] = []
    for delivery in deliveries:
        try:
            batch.append(prepare(delivery, kind))
        except Exception as exc:  # a malformed body, an unknown stream: this delivery's own failure
            results[delivery.pk] = _failed(delivery, exc)
    try:
        fetched = _fetch(kind, _joined([p.by_stream for p in batch]))
    except RateBudgetDeferred as exc:
        results.update({p.delivery.pk: _deferred(p.delivery, exc) for p in batch})
        return results
    except Transient as exc:
        # The vendor's fault (a timeout, a 5xx, a 429), not one delivery's: each is failed and retried on
        # its own backoff (alone: a retry is not batched), rather than asked again here one by one.
        results.update({p.delivery.pk: _failed(p.delivery, exc) for p in batch})
        return results
    except Exception:
        # A refusal may be one delivery's doing (an id the vendor rejects): each on its own finds out.
        logger.info("a batch's upstream read failed; processing its %d deliveries one by one", len(batch))
        results.update({p.delivery.pk: _process_claimed(p.delivery, p) for p in batch})
        return results

    now = timezone.now()
    failures: dict[int, Exception] = {}
    done: dict[int, DeliveryResult] = {}
    summaries: dict[int, dict[str, Any]] = {}
    # The rules' coalescing window starts at the oldest delivery's arrival (``flush_soon``).
    since = min(p.delivery.received_at for p in batch) if batch else None
    try:
        with transaction.atomic(), entities_changes_collected(trigger="webhook", since=since):
            # The fence, taken once for the batch: the rows this attempt still holds, locked until commit
            # (the sweeper skips locked rows, so none of them can be given to a newer attempt meanwhile).
            held = _lock_held([p.delivery for p in batch])
            changes: dict[str, set[int]] = {}
            for p in batch:
                if p.delivery.pk not in held:
                    done[p.delivery.pk] = DeliveryResult("skipped", error="lease lost to a newer attempt")
                    continue
                counts = _new_counts(p.by_stream)
                mine = _records_for(p, fetched)
                try:
                    with transaction.atomic(), entities_changes_collected(trigger="webhook"):
                        changed = _apply_streams(p.delivery.connection, kind, p.by_stream, mine, now, counts)
                        kind.after_webhook(p.delivery)
                except Exception as exc:
                    failures[p.delivery.pk] = exc
                    continue
                for key, ids in changed.items():
                    changes.setdefault(key, set()).update(ids)
                summaries[p.delivery.pk] = p.summary(counts)
                done[p.delivery.pk] = DeliveryResult("processed", counts=p.result_counts(counts))
            # One linking, and one marking for the rules when the scope ends (a merge's publish joins it).
            entities_changed_publish(changes, trigger="webhook")
            _finish_many(summaries)
    except Exception:
        # Linking or marking failed, so nothing of the batch was applied: each on its own, as a single
        # delivery is processed (a new read upstream: the one above may be stale by now).
        logger.warning("a batch of %d webhook deliveries failed; one by one", len(batch), exc_info=True)
        results.update({p.delivery.pk: _process_claimed(p.delivery, p) for p in batch})
        return results
    results.update(done)
    by_pk = {p.delivery.pk: p.delivery for p in batch}
    for pk, failure in failures.items():
        results[pk] = _failed(by_pk[pk], failure)
    return results


def _lock_held(deliveries: list[WebhookDelivery]) -> set[int]:
    """Lock the rows still held by the attempts that claimed them; their ids."""
    rows = WebhookDelivery.objects.select_for_update().filter(status=Status.PROCESSING)
    held = Q()
    for delivery in deliveries:
        held |= Q(pk=delivery.pk, attempts=delivery.attempts)
    return set(rows.filter(held).order_by("pk").values_list("pk", flat=True))


_FINISH_MANY = """
    UPDATE {table} d SET status = 'processed', processed_at = clock_timestamp(),
                         status_changed_at = clock_timestamp(), error = '', summary = v.summary
      FROM unnest(%s::bigint[], %s::jsonb[]) AS v(id, summary)
     WHERE d.id = v.id AND d.status = 'processing'
"""


def _finish_many(summaries: dict[int, dict[str, Any]]) -> None:
    """Mark the applied deliveries processed, with their summaries, in one statement (their rows are
    locked by ``_lock_held``: still this attempt's). ``processed_at`` is the statement's time, just before
    the batch commits."""
    if not summaries:
        return
    sql = _FINISH_MANY.format(table=db.ops.quote_name(WebhookDelivery._meta.db_table))
    ids = sorted(summaries)
    with db.cursor() as cursor:
        cursor.execute(sql, [ids, [json.dumps(summaries[pk]) for pk in ids]])
        if cursor.rowcount != len(ids):
            raise LeaseLost(ids)  # cannot happen with the rows locked; the whole batch then goes one by one


def _joined(all_hints: list[dict[str, list[Hint]]]) -> dict[str, list[Hint]]:
    joined: dict[str, list[Hint]] = defaultdict(list)
    for by_stream in all_hints:
        for name, hints in by_stream.items():
            joined[name] += hints
    return dict(joined)


def _records_for(p: Prepared, fetched: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The records read for the batch that this delivery asked for (each delivery applies, and counts as
    gone, exactly what it would have read alone)."""
    mine: dict[str, list[dict[str, Any]]] = {}
    for name, ids in p.asked.items():
        stream = p.kind.stream(name)
        mine[name] = [doc for doc in fetched.get(name, []) if str(stream.record_id(doc)) in ids]
    return mine


def _apply(
    connection: Connection,
    stream: Stream,
    hints: list[Hint],
    docs: list[dict[str, Any]],
    now: dt.datetime,
    counts: dict[str, int],
) -> set[int]:
    """Upsert what was fetched (or sent), tombstone what is gone; return the changed entity ids."""
    lines = stream.line_items  # one entity row per document line: "<doc id>:<line id>"
    found = {stream.record_id(doc): doc for doc in docs}
    raws: list[dict[str, Any]] = stream.explode(list(found.values()))
    raws += [h.data for h in hints if h.op == "upsert" and h.data is not None]
    rows, bad = [], []
    for raw in raws:
        row, reason = record_normalise(stream, raw)
        if row is None:
            bad.append((raw, reason))
        else:
            rows.append(row)
    result = upsert_rows(stream.model, source_id=connection.pk, rows=rows, now=now)
    bad += [(row, reason) for row, reason in result.rejected]
    if bad:
        quarantine_records(connection, stream.name, [(raw, f"webhook: {reason}") for raw, reason in bad])
        counts["quarantined"] += len(bad)
    changed = set(result.changed_ids)

    gone: list[tuple[str, dt.datetime]] = []
    asked = {h.external_id for h in hints if h.op in FETCHED and h.data is None}
    gone += [(external_id, now) for external_id in sorted(asked - found.keys())]
    for hint in hints:
        if hint.op == "delete":
            gone.append(_deleted_key(stream, hint, now))
    tombstoned = _tombstone(stream.model, connection.pk, gone, now, lines=lines)
    if lines and found:
        # A document read whole: its lines that are no longer on it (or no longer charged to a job) are gone.
        current = [row["external_id"] for row in rows]
        versions = [(doc_id, stream.document_version(doc, now)) for doc_id, doc in found.items()]
        tombstoned |= _tombstone(stream.model, connection.pk, versions, now, lines=True, keep=current)
    counts["tombstoned"] += len(tombstoned)
    return changed | tombstoned


def _deleted_key(stream: Stream, hint: Hint, now: dt.datetime) -> tuple[str, dt.datetime]:
    """The external id and version of a deleted record: the id from the record when one came with the event.

    A deletion comes after the record's last update, so its version is just past that update's (or the
    event's time, when later): at the record's own time it would tie with the last update event, and that
    event, delivered late, would bring the record back. Whole-second timestamps tie often.
    """
    if hint.data is not None:
        try:
            row = stream.normalise(hint.data)
            after: dt.datetime = row["source_updated_at"] + dt.timedelta(microseconds=1)
            return str(row["external_id"]), max(after, hint.at) if hint.at else after
        except (BadRecord, KeyError):
            pass
    return hint.external_id, hint.at or now


def _tombstone(
    model: type[models.Model],
    source_id: int,
    keys: list[tuple[str, dt.datetime]],
    now: dt.datetime,
    *,
    lines: bool = False,
    keep: list[str] | None = None,
) -> set[int]:
    """Mark live records deleted unless we hold a version newer than the deletion; return their ids.

    ``source_updated_at`` moves up to the deletion's time, so an older copy read later (a slow sync page, a
    late webhook) cannot bring the record back; a genuinely newer version (a restore) still can. With
    ``lines`` a key is a document id and matches its ``<doc id>:<line id>`` rows, except those in ``keep``.
    """
    keys = [(key, at) for key, at in keys if key]
    if not keys:
        return set()
    table = db.ops.quote_name(model._meta.db_table)
    src = source_column(model)
    match = "split_part(t.external_id, ':', 1) = v.key" if lines else "t.external_id = v.key"
    sql = f"""
        UPDATE {table} t SET deleted_at = %s, source_updated_at = GREATEST(t.source_updated_at, v.at)
        FROM unnest(%s::text[], %s::timestamptz[]) AS v(key, at)
        WHERE t.{src} = %s AND {match} AND t.deleted_at IS NULL AND t.source_updated_at <= v.at
          AND NOT (t.external_id = ANY(%s::text[]))
        RETURNING t.id
    """  # noqa: S608 - identifiers from model metadata; values are bound parameters
    with db.cursor() as cursor:
        cursor.execute(sql, [now, [k for k, _ in keys], [at for _, at in keys], source_id, keep or []])
        return {pk for (pk,) in cursor.fetchall()}


def _merge(
    connection: Connection, stream: Stream, hints: list[Hint], now: dt.datetime, counts: dict[str, int]
) -> set[int]:
    """Upstream merges become merges here. Clients and projects merged away upstream are merged into the
    survivor's entity (links, projects, money and escalations move over; ``merged_into`` remembers). Any
    other record merged away, or one whose survivor is not held, is tombstoned (version-guarded, as a delete
    at the merge's time) and, where the model keeps the pointer (the QuickBooks crosswalk's
    ``merged_into_ref``), points to its survivor. Returns the rows that changed."""
    pairs = [(gone, h.external_id, h.at or now) for h in hints if h.op == "merge" for gone in h.merged]
    if not pairs:
        return set()
    model = stream.model
    changed: set[int] = set()
    if issubclass(model, Client | Project):
        live = model._default_manager.filter(source=connection, deleted_at__isnull=True)
        unheld = []
        for gone, survivor_id, at in pairs:
            duplicate = live.filter(external_id=gone).first()
            survivor = live.filter(external_id=survivor_id).first()
            if duplicate is None:
                continue
            if survivor is None:
                unheld.append((gone, survivor_id, at))
                continue
            entity_merge(duplicate=duplicate, survivor=survivor, actor=MERGE_ACTOR)
            counts["merged"] += 1
            changed |= {duplicate.pk, survivor.pk}
        pairs = unheld
        if not pairs:
            return changed
    changed |= _tombstone(model, connection.pk, [(gone, at) for gone, _, at in pairs], now)
    counts["tombstoned"] += len(changed)
    if "merged_into_ref" not in {f.name for f in model._meta.get_fields()}:
        return changed
    table = db.ops.quote_name(model._meta.db_table)
    sql = f"""
        UPDATE {table} t SET merged_into_ref = v.survivor
        FROM unnest(%s::text[], %s::text[]) AS v(key, survivor)
        WHERE t.{source_column(model)} = %s AND t.external_id = v.key AND t.deleted_at IS NOT NULL
          AND t.merged_into_ref IS DISTINCT FROM v.survivor
        RETURNING t.id
    """  # noqa: S608 - identifiers from model metadata; values are bound parameters
    with db.cursor() as cursor:
        cursor.execute(sql, [[g for g, _, _ in pairs], [s for _, s, _ in pairs], connection.pk])
        pointed = {pk for (pk,) in cursor.fetchall()}
    counts["merged"] += len(pointed)
    return changed | pointed


# ---- the sweeper ----------------------------------------------------------------------------------------


def sweep(now: dt.datetime | None = None) -> list[int]:
    """Rows to queue again: processing (a lost worker) or failed for longer than the lease, or never
    claimed for ``UNCLAIMED_AFTER``.

    Each returned row's ``status_changed_at`` is moved to now, so the next sweep leaves it alone for another
    lease; stuck ``processing`` rows go back to ``received`` so that they can be claimed (their holder, if
    it still runs, then fails its fence). A row queued again that was merely waiting in a long queue costs
    one extra message: its claim is conditional.
    """
    now = now or timezone.now()
    cutoff = now - lease()
    due = Q(status_changed_at__lt=cutoff) & (
        Q(status=Status.PROCESSING) | Q(status=Status.FAILED, attempts__lt=MAX_ATTEMPTS)
    ) | Q(status=Status.RECEIVED, status_changed_at__lt=now - max(lease(), UNCLAIMED_AFTER))
    ids = list(
        WebhookDelivery.objects.filter(due)
        .order_by("status_changed_at")
        .values_list("id", flat=True)[:SWEEP_BATCH]
    )
    if not ids:
        return []
    lost = f"worker lost: no result after {lease().total_seconds():g} s"
    with transaction.atomic():
        rows = WebhookDelivery.objects.select_for_update(skip_locked=True).filter(due, id__in=ids)
        found = {
            pk: (status, attempts) for pk, status, attempts in rows.values_list("id", "status", "attempts")
        }
        stuck = [pk for pk, (status, _) in found.items() if status == Status.PROCESSING]
        spent = [pk for pk in stuck if found[pk][1] >= MAX_ATTEMPTS]
        requeued = sorted(pk for pk in found if pk not in spent)
        WebhookDelivery.objects.filter(id__in=spent).update(
            status=Status.FAILED, status_changed_at=now, error=f"{lost}; no attempts left"
        )
        WebhookDelivery.objects.filter(id__in=stuck).exclude(id__in=spent).update(
            status=Status.RECEIVED, status_changed_at=now, error=lost
        )
        WebhookDelivery.objects.filter(id__in=requeued).exclude(id__in=stuck).update(status_changed_at=now)
    return requeued
