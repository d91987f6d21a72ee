"""/healthz: database, broker and worker liveness, for load balancers and operators (SPEC "Operations").

200 only when the database answers, the broker accepts a connection and at least one Celery worker
answers a ping within ``WORKER_PING_TIMEOUT``; otherwise 503. The body names each part's state, and
``failing`` lists the parts that are down, so a 503 says what to look at.

The worker check is a real ``control.ping`` broadcast over the broker: a heartbeat row stamped by a
beat-scheduled task would stay fresh for minutes after the last worker died (issue 19's probe).
``limit=1`` returns as soon as one worker answers, so a healthy answer costs milliseconds; only a dead
worker pool costs the whole timeout.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from .models import Heartbeat

logger = logging.getLogger("fulcrum.health")

WORKER_PING_TIMEOUT = 3.0


def _database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.warning("healthz: database unreachable", exc_info=True)
        return False


def _broker() -> bool:
    from kombu import Connection

    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        logger.warning("healthz: broker unreachable", exc_info=True)
        return False


def workers_ping(*, timeout: float = WORKER_PING_TIMEOUT) -> list[str]:
    """Names of the workers that answered a ping within ``timeout`` seconds (stops at the first)."""
    from config.celery import app

    try:
        replies = app.control.ping(timeout=timeout, limit=1)
    except Exception:
        logger.warning("healthz: worker ping failed", exc_info=True)
        return []
    return sorted(name for reply in replies or [] for name in reply)


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    database = _database()
    broker = _broker()
    workers = workers_ping(timeout=WORKER_PING_TIMEOUT) if broker else []
    checks = {"database": database, "broker": broker, "worker": bool(workers)}
    failing = [name for name, up in checks.items() if not up]
    status = 503 if failing else 200
    # Beat's last heartbeat (a beat-scheduled task run by a worker): shown for operators, not judged,
    # since beat runs once and a worker can be healthy while beat is being restarted.
    beats = Heartbeat.objects.filter(name="worker").values_list("beat_at", flat=True)
    beat = beats.first() if database else None
    body = {"ok": not failing, **checks, "failing": failing, "workers": workers}
    body["beat_seen_at"] = beat.isoformat() if beat else None
    return JsonResponse(body, status=status)
