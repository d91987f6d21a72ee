from celery import shared_task
from celery.signals import task_success
from django.core.cache import cache

from apps.connectors.tasks import sync_connection_task

from .services import findings_prune, quality_scan

# Scans queued by the syncs of one burst collapse into one: a marker lives until the scan starts.
_QUEUED = "quality:scan-queued"
AFTER_SYNC_DELAY = 30


@shared_task(ignore_result=True)
def quality_scan_task() -> str:
    """Scan every check (after syncs, coalesced, and nightly); safe to repeat."""
    cache.delete(_QUEUED)
    totals = quality_scan()
    pruned = findings_prune()
    return "; ".join(f"{kind}: {counts}" for kind, counts in totals.items()) + f"; pruned {pruned}"


@task_success.connect
def _after_sync(sender: object = None, **kwargs: object) -> None:
    # Freshness moves with every successful sync, changed rows or not (entities_changed covers the rest:
    # the pipeline scans before it decides). The task itself, not its name: a rename fails at import.
    if sender is sync_connection_task and cache.add(_QUEUED, 1, timeout=10 * AFTER_SYNC_DELAY):
        quality_scan_task.apply_async(countdown=AFTER_SYNC_DELAY)
