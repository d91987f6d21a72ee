"""The Celery application. Workers and beat start here; the embedded servers are started if unset."""

import os

from celery import Celery

from config.embedded_servers import ensure_services

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
ensure_services()

app = Celery("fulcrum")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
