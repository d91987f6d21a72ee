"""Catching up after webhook silence with Intuit's Change Data Capture (CDC).

``GET /v3/company/{realmId}/cdc?entities=<list>&changedSince=<dateTime>`` returns the full payload of every
listed entity changed since then, deleted ones with ``"status": "Deleted"``; it looks back at most 30 days
and returns at most 1,000 objects per entity
(https://developer.intuit.com/app/developer/qbo/docs/learn/explore-the-quickbooks-online-api/change-data-capture).

What triggers it, exactly: processing the first accepted QuickBooks webhook delivery that arrives more than
``RETRY_WINDOW`` after the connection's previous accepted delivery (``options.webhook_silence_minutes``
overrides). Intuit retries an unacknowledged event at 0 s, 10 s, 20 s, 30 s, 5 min, 20 min, 2 h, 4 h and 6 h,
then every 6 h, and holds later events back until the first is acknowledged
(https://blogs.intuit.com/2025/10/14/introducing-enhanced-webhooks-monitoring/): a gap longer than that
schedule's first cycle (12 h 26 min) means events may have been given up on or never sent, so one CDC call
re-reads every synced entity from the previous delivery's arrival (less ``MARGIN``), at most 30 days back.
A quiet company costs one call per gap. An entity answered with 1,000 objects may have been cut short: its
updates are then re-read through the query pager from the same instant; deletions past the cut are left to
the reconciliation id sweep. A gap over 30 days is caught up for the last 30 days only and says so.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from apps.connectors.kinds.base import BadRecord, parse_datetime
from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.webhooks.schemes import Hint

from .streams import MINOR_VERSION, QueryStream, query_time
from .webhooks import QBO_STREAMS

if TYPE_CHECKING:
    from . import QuickBooks

logger = logging.getLogger(__name__)

RETRY_WINDOW = dt.timedelta(hours=12, minutes=30)
LOOKBACK = dt.timedelta(days=30)
MAX_OBJECTS = 1000  # per entity per CDC response
MARGIN = dt.timedelta(minutes=5)  # re-read a little before the silence began: events in flight then


def silence_window(connection: Connection) -> dt.timedelta:
    minutes = (connection.options or {}).get("webhook_silence_minutes")
    return RETRY_WINDOW if minutes in (None, "") else dt.timedelta(minutes=float(minutes))


def silence_before(delivery: WebhookDelivery) -> dt.datetime | None:
    """The previous accepted delivery's arrival when it came more than the window before this one (the
    start of a silence), else None. Events of one batch share an arrival: only its first row sees a gap."""
    previous = (
        WebhookDelivery.objects.filter(connection_id=delivery.connection_id)
        .exclude(status=WebhookDelivery.Status.REJECTED)
        .filter(received_at__lte=delivery.received_at)
        .exclude(pk=delivery.pk)
        .exclude(received_at=delivery.received_at, pk__gt=delivery.pk)
        .order_by("-received_at", "-pk")
        .values_list("received_at", flat=True)
        .first()
    )
    if previous is None or delivery.received_at - previous <= silence_window(delivery.connection):
        return None
    return previous


def after_delivery(delivery: WebhookDelivery) -> None:
    """Inside the delivery's processing transaction: queue a catch-up if it ended a silence."""
    started = silence_before(delivery)
    if started is None:
        return
    since = started - MARGIN
    logger.info(
        "quickbooks %s: no webhook for %s; catching up with CDC from %s",
        delivery.connection.slug,
        delivery.received_at - started,
        since.isoformat(),
    )

    def queue() -> None:
        from apps.connectors.webhooks.tasks import catch_up_quickbooks

        try:
            catch_up_quickbooks.apply_async((delivery.connection_id, since.isoformat()), retry=False)
        except Exception:
            logger.warning("could not queue the QuickBooks catch-up", exc_info=True)

    transaction.on_commit(queue)


def _cdc(kind: QuickBooks, client: Any, since: dt.datetime) -> dict[str, list[dict[str, Any]]]:
    """One CDC call for every synced entity: ``{entity name: [objects]}``."""
    entities = [stream.entity_name for stream in kind.streams if isinstance(stream, QueryStream)]
    data = client.get_json(
        f"/v3/company/{kind.realm}/cdc",
        params={
            "entities": ",".join(entities),
            "changedSince": query_time(since),
            "minorversion": MINOR_VERSION,
        },
    )
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for response in data.get("CDCResponse") or []:
        for query_response in (response or {}).get("QueryResponse") or []:
            for name in entities:
                found[name] += (query_response or {}).get(name) or []
    return found


def quickbooks_catch_up(
    *, connection: Connection, since: dt.datetime, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Re-read everything changed upstream since ``since`` (CDC, at most 30 days back) and apply it through
    the webhook path's version-guarded upsert: changed records upserted, deleted ones tombstoned."""
    from apps.connectors.kinds import get_kind
    from apps.connectors.webhooks.processing import apply_changes

    now = now or timezone.now()
    kind = get_kind(connection)
    earliest = now - LOOKBACK + dt.timedelta(minutes=1)
    clipped = since < earliest
    since = max(since, earliest)
    by_stream: dict[str, list[Hint]] = defaultdict(list)
    fetched: dict[str, list[dict[str, Any]]] = defaultdict(list)
    truncated: list[str] = []
    client = kind.client()
    try:
        for entity, objects in _cdc(kind, client, since).items():  # type: ignore[arg-type]
            stream_name = QBO_STREAMS[entity]
            if len(objects) >= MAX_OBJECTS:
                # Possibly cut short: the updates are re-read through the query pager (deletions cannot be).
                truncated.append(entity)
                stream = kind.stream(stream_name)
                assert isinstance(stream, QueryStream)
                for documents in stream.documents_since(client, since):
                    objects = objects + documents
            for raw in objects:
                record_id = str(raw.get("Id") or "")
                if not record_id:
                    continue
                try:
                    at = parse_datetime((raw.get("MetaData") or {}).get("LastUpdatedTime"))
                except BadRecord:
                    at = None
                if str(raw.get("status") or "").lower() == "deleted":
                    by_stream[stream_name].append(Hint(stream_name, record_id, "delete", at))
                else:
                    by_stream[stream_name].append(Hint(stream_name, record_id, "upsert", at))
                    fetched[stream_name].append(raw)
    finally:
        client.close()
    counts: dict[str, Any] = apply_changes(
        connection, kind, dict(by_stream), dict(fetched), now, trigger="sync"
    )
    counts.update(since=since.isoformat(), truncated=truncated, lookback_clipped=clipped)
    logger.info("quickbooks %s catch-up: %s", connection.slug, counts)
    return counts
