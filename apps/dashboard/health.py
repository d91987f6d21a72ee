"""/healthz: database, broker and worker liveness, for load balancers and operators."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from .models import Heartbeat

WORKER_STALE_AFTER = dt.timedelta(minutes=2)


def _database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _broker() -> bool:
    from kombu import Connection

    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def healthz(request: HttpRequest) -> JsonResponse:
    database = _database()
    beat = (
        Heartbeat.objects.filter(name="worker").values_list("beat_at", flat=True).first()
        if database
        else None
    )
    worker = bool(beat and timezone.now() - beat < WORKER_STALE_AFTER)
    checks = {"database": database, "broker": _broker(), "worker": worker}
    status = 200 if checks["database"] and checks["broker"] else 503
    return JsonResponse(
        {"ok": status == 200, **checks, "worker_seen_at": beat.isoformat() if beat else None}, status=status
    )
