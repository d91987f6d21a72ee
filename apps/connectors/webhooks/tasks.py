"""Celery entry points for webhook deliveries: process one stored delivery; sweep the ones left behind."""

from __future__ import annotations

import logging
import random

from celery import shared_task

from .processing import MAX_ATTEMPTS, process_delivery, sweep

logger = logging.getLogger(__name__)

BACKOFF_BASE = 10.0  # seconds; doubled per retry, with jitter
BACKOFF_CAP = 600.0


def backoff(retries: int) -> float:
    return min(BACKOFF_CAP, BACKOFF_BASE * 2**retries) * random.uniform(0.5, 1.0)


# acks_late: a worker that dies mid-task leaves the message to be redelivered; processing is idempotent
# (a conditional claim, version-guarded upserts) and the sweeper covers messages that never arrive.
@shared_task(bind=True, acks_late=True, max_retries=MAX_ATTEMPTS - 1, ignore_result=True)
def process_webhook_delivery(self, delivery_id: int) -> str:  # type: ignore[no-untyped-def]
    outcome = process_delivery(delivery_id)
    if outcome.retry and self.request.retries < self.max_retries:
        raise self.retry(countdown=backoff(self.request.retries))
    return f"webhook delivery {delivery_id}: {outcome.status} {outcome.counts or outcome.error}".rstrip()


@shared_task(acks_late=True, ignore_result=True)
def sweep_webhooks() -> str:
    """Beat, every minute: re-queue deliveries unclaimed, failed or stuck processing for 5 minutes."""
    ids = sweep()
    for delivery_id in ids:
        enqueue(delivery_id)
    return f"re-queued {len(ids)} webhook deliveries"


def enqueue(delivery_id: int) -> None:
    """Queue processing; a broker that is down only delays it (the row is stored, the sweeper finds it)."""
    try:
        process_webhook_delivery.apply_async((delivery_id,), retry=False)
    except Exception:
        logger.warning("could not queue webhook delivery %s; the sweeper will", delivery_id, exc_info=True)


@shared_task(acks_late=True, max_retries=3, ignore_result=True, autoretry_for=(OSError,), retry_backoff=60)
def catch_up_quickbooks(connection_id: int, since: str) -> str:
    """After webhook silence (see ``kinds.quickbooks.catchup``): re-read what changed since ``since`` with
    Intuit's CDC. Safe to run twice: every write goes through the version-guarded upsert."""
    import datetime as dt

    from apps.connectors.kinds.quickbooks.catchup import quickbooks_catch_up
    from apps.connectors.models import Connection

    connection = Connection.objects.filter(pk=connection_id, enabled=True, kind="quickbooks").first()
    if connection is None:
        return f"connection {connection_id}: not an enabled QuickBooks connection"
    counts = quickbooks_catch_up(connection=connection, since=dt.datetime.fromisoformat(since))
    return f"quickbooks {connection.slug} caught up: {counts}"
