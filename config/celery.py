"""The Celery application. Workers and beat start here; the embedded servers are started if unset."""

import logging
import os

from celery import Celery
from celery.signals import worker_init
from django.core.exceptions import ImproperlyConfigured

from config.embedded_servers import ensure_services
from config.worker_priority import lower_priority

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
ensure_services()

app = Celery("fulcrum")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _worker_priority(**_: object) -> None:
    """``WORKER_NICE`` (0–19): this worker's CPU priority (config/worker_priority.py)."""
    text = os.environ.get("WORKER_NICE", "").strip() or "0"
    if not text.isdigit() or int(text) > 19:
        raise ImproperlyConfigured(f"WORKER_NICE must be a whole number from 0 to 19, not {text!r}")
    done = lower_priority(int(text))
    if done:
        logging.getLogger(__name__).info("worker priority: %s", ", ".join(done))
