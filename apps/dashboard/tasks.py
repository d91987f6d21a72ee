from celery import shared_task
from django.utils import timezone

from .models import Heartbeat


@shared_task(ignore_result=True, expires=60)
def heartbeat() -> str:
    """Scheduled by beat, run by a worker: proves both are alive (read by /healthz)."""
    Heartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})
    return "ok"
