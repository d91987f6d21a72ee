from celery import shared_task

from .resolution import entities_resolve


@shared_task(ignore_result=True)
def resolve_entities_task() -> str:
    """Fuzzy-match what exact keys left unlinked (scheduled; safe to repeat: decided pairs are skipped)."""
    result = entities_resolve()
    return f"auto-linked {result.auto_linked}, queued {result.queued}, new {result.new_entities}"
