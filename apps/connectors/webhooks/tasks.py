"""Celery entry points for webhook deliveries: process one stored delivery; sweep the ones left behind."""

from __future__ import annotations

import logging
import math
from typing import Any

from celery import shared_task
from django.conf import settings

from apps.connectors import ratelimit
from apps.errors import configured_backoff, decorrelated_backoff

from .processing import MAX_ATTEMPTS, DeliveryResult, process_deliveries, sweep

logger = logging.getLogger(__name__)

# Retries are short on purpose: a webhook is a user-visible change waiting to be applied, and the fault that
# failed it (a 5xx burst, a 429) usually clears in seconds. The first ``WEBHOOK_QUICK_RETRIES`` follow
# quickly, by decorrelated jitter from ``WEBHOOK_QUICK_BASE`` (0.1 s: the first within 0.1-0.3 s, the second
# within 0.1-0.9 s; the vendor client has already retried inside the call, and every call still goes through
# the shared rate budget); later ones go back to full jitter (``WEBHOOK_BACKOFF_BASE`` 1 s doubling to
# ``_CAP`` 30 s), so the span over all attempts stays what it was. The upstream's advice (``Retry-After``,
# a rate-limit reset) wins whenever it is longer, quick or not. A 429 never parks other deliveries: they meet
# the shared budget's hold, and a hold longer than a worker should sleep defers them (``RateBudgetDeferred``).
# An upstream asking for longer than this is asked again then; the sweeper is the backstop.
RETRY_AFTER_CAP = 300.0


def retry_wait(retries: int, previous: float | None, retry_after: float | None) -> float:
    """Seconds before retry ``retries`` (0 for the first) of a delivery whose last wait was ``previous``."""
    conf = settings.FULCRUM
    if retries < int(conf["WEBHOOK_QUICK_RETRIES"]):
        base, cap = float(conf["WEBHOOK_QUICK_BASE"]), float(conf["WEBHOOK_BACKOFF_CAP"])
        return decorrelated_backoff(
            previous, base=base, cap=cap, retry_after=retry_after, longest=RETRY_AFTER_CAP
        )
    return configured_backoff("WEBHOOK", retries, retry_after=retry_after, longest=RETRY_AFTER_CAP)


# acks_late: a worker that dies mid-task leaves the message to be redelivered; processing is idempotent
# (a fenced claim, version-guarded upserts) and the sweeper re-queues a row whose lease ran out (a
# SIGKILLed worker's message waits in Redis until the visibility timeout, far too long).
# One task drains a batch: its delivery and the others of the connection waiting untouched (``processing``:
# "batches"). The others' own messages then find them taken and skip; what a batch leaves to do for one
# of them (a retry, a deferral) is queued here for that delivery, as its own task would have.
@shared_task(bind=True, acks_late=True, max_retries=MAX_ATTEMPTS - 1, ignore_result=True)
def process_webhook_delivery(  # type: ignore[no-untyped-def]
    self, delivery_id: int, deferrals: int = 0, waited: float | None = None
) -> str:
    ratelimit.take_deferral()  # a previous task's, in this process
    with ratelimit.deferring():
        outcomes = process_deliveries(delivery_id)
    ratelimit.take_deferral()
    outcome = outcomes.pop(delivery_id)
    for other_id, other in outcomes.items():
        _follow_up(other_id, other)
    batch = f" (+{len(outcomes)} in its batch)" if outcomes else ""
    if outcome.status == "deferred":
        # The shared budget is spent: a new message for when it refills, carrying the retry count as it
        # is (``self.retry`` would spend one), so this worker's slot goes to the work behind it.
        countdown = _countdown(outcome)
        options = {"countdown": countdown, "retries": self.request.retries}  # send_task's own options
        later: dict[str, Any] = {"deferrals": deferrals + 1}
        if waited is not None:  # the quick retries go on from the last wait
            later["waited"] = waited
        process_webhook_delivery.apply_async((delivery_id,), later, **options)
        return f"webhook delivery {delivery_id}: rate budget spent, deferred {countdown:g} s{batch}"
    if outcome.retry and self.request.retries < self.max_retries:
        wait = retry_wait(self.request.retries, waited, outcome.retry_after)
        raise self.retry(countdown=wait, kwargs={"deferrals": deferrals, "waited": wait})
    said = f"{outcome.status} {outcome.counts or outcome.error}".rstrip()
    return f"webhook delivery {delivery_id}: {said}{batch}"


def _countdown(outcome: DeliveryResult) -> float:
    return math.ceil(outcome.deferred * 10) / 10


def _follow_up(delivery_id: int, outcome: DeliveryResult) -> None:
    """A batch mate's deferral or retry, queued as its own task would have queued it (a mate is a delivery
    never tried before, so its message carried no retries and no deferrals). A broker that is down only
    delays it: the row is received or failed, and the sweeper finds it."""
    try:
        if outcome.status == "deferred":
            options: dict[str, Any] = {"countdown": _countdown(outcome), "retries": 0, "retry": False}
            process_webhook_delivery.apply_async((delivery_id,), {"deferrals": 1}, **options)
        elif outcome.retry:
            wait = retry_wait(0, None, outcome.retry_after)
            options = {"countdown": wait, "retries": 1, "retry": False}  # send_task's own options
            process_webhook_delivery.apply_async((delivery_id,), {"waited": wait}, **options)
    except Exception:
        logger.warning("could not queue webhook delivery %s; the sweeper will", delivery_id, exc_info=True)


@shared_task(acks_late=True, ignore_result=True)
def sweep_webhooks() -> str:
    """Beat, every ``WEBHOOK_SWEEP_SECONDS``: re-queue deliveries unclaimed, failed or stuck processing
    for longer than their lease."""
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
