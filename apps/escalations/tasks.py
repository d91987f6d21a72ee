from celery import shared_task

from .delivery import delivery_attempt, due_delivery_ids


@shared_task(acks_late=True, ignore_result=True)
def deliver(delivery_id: int) -> str:
    """Send one outbox row (safe to run twice: the claim is a conditional UPDATE)."""
    return delivery_attempt(delivery_id)


@shared_task(ignore_result=True)
def deliver_due() -> str:
    """Beat sweeper: everything due, including rows whose worker died mid-send."""
    ids = due_delivery_ids()
    for pk in ids:
        delivery_attempt(pk)
    return f"{len(ids)} due"
