"""``/metrics``: Prometheus text exposition (SPEC "Operations").

Two sources. The database-derived metrics (syncs, stream lag, decisions, open escalations, the outbox,
pending evaluations, audit verification) come from the snapshot a worker takes every 15 s
(``snapshot.py``), so a scrape reads one row. The process metrics (HTTP requests, webhook deliveries as
answered, Celery tasks) are counted where they happen with ``prometheus-client``; with
``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn and workers, see ``config/gunicorn.py`` and the Procfile)
every process writes its own files and a scrape adds them up (the library's multiprocess mode).

``METRICS_TOKEN``, when set, is required as ``Authorization: Bearer <token>`` (compared in constant time).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# --- process metrics ----------------------------------------------------------------------------------

HTTP_REQUESTS = Counter("fulcrum_http_requests", "HTTP requests answered", ["method", "status"])
HTTP_SECONDS = Histogram(
    "fulcrum_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOKS = Counter(
    "fulcrum_webhook_deliveries",
    "Webhook POSTs answered, by result: accepted, duplicate, unauthorized, malformed, too_large, error",
    ["connection", "result"],
)
TASKS = Counter("fulcrum_celery_tasks", "Celery tasks finished, by state", ["task", "state"])
TASK_SECONDS = Histogram(
    "fulcrum_celery_task_duration_seconds",
    "Celery task run time",
    ["task"],
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)

WEBHOOK_RESULTS = {
    202: "accepted",
    200: "duplicate",
    400: "malformed",
    401: "unauthorized",
    404: "unknown_connection",
    413: "too_large",
}


# --- the database snapshot ------------------------------------------------------------------------------

HELP = {
    "fulcrum_sync_records_total": ("counter", "Records read from upstream by syncs"),
    "fulcrum_stream_lag_seconds": ("gauge", "Seconds since the stream's last successful sync started"),
    "fulcrum_sync_unpublished_oldest_seconds": (
        "gauge",
        "Age of the oldest finished sync run whose changes are not yet linked and marked for evaluation",
    ),
    "fulcrum_webhook_inbox": ("gauge", "Stored webhook deliveries by processing status"),
    "fulcrum_decisions_total": ("counter", "Traced rule decisions written, by rule and outcome"),
    "fulcrum_escalations_open": ("gauge", "Open or acknowledged escalations"),
    "fulcrum_deliveries_total": ("gauge", "Outbox rows (one per action and target) by state"),
    "fulcrum_outbox_dead": ("gauge", "Outbox rows dead after their last attempt (admin: Dead letters)"),
    "fulcrum_outbox_oldest_due_seconds": ("gauge", "How late the oldest due outbox row is"),
    "fulcrum_pending_evaluations": ("gauge", "Subjects marked for evaluation and not yet evaluated"),
    "fulcrum_pending_evaluation_oldest_seconds": ("gauge", "Age of the oldest pending evaluation"),
    "fulcrum_pending_evaluations_retrying": ("gauge", "Pending evaluations that failed at least once"),
    "fulcrum_audit_verify_ok": ("gauge", "1 if the last scheduled verify_audit passed (anchors too)"),
    "fulcrum_audit_verify_timestamp_seconds": ("gauge", "When verify_audit last ran (Unix time)"),
    "fulcrum_metrics_snapshot_seconds": ("gauge", "Time the last database snapshot took"),
}


class SnapshotCollector:
    """Yields the stored snapshot's metrics, and its age (stale means no worker is taking it)."""

    def collect(self) -> Iterator[Metric]:
        from .models import MetricsSnapshot
        from .snapshot import NAME

        row = MetricsSnapshot.objects.filter(name=NAME).values("taken_at", "data").first()
        age = GaugeMetricFamily(
            "fulcrum_metrics_snapshot_timestamp_seconds",
            "When a worker last took the database snapshot (Unix time); stale: no worker runs beat's tasks",
        )
        age.add_metric([], row["taken_at"].timestamp() if row else 0)
        yield age
        if not row:
            return
        for name, samples in sorted(row["data"].items()):
            kind, text = HELP.get(name, ("gauge", name))
            labels = sorted({k for sample_labels, _ in samples for k in sample_labels})
            family: Any
            if kind == "counter":
                from prometheus_client.core import CounterMetricFamily

                family = CounterMetricFamily(name.removesuffix("_total"), text, labels=labels)
            else:
                family = GaugeMetricFamily(name, text, labels=labels)
            for sample_labels, value in samples:
                family.add_metric([str(sample_labels.get(k, "")) for k in labels], value)
            yield family


def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
    else:
        reg = CollectorRegistry()
        for collector in list(DEFAULT_REGISTRY._collector_to_names):
            reg.register(collector)
    reg.register(SnapshotCollector())
    return reg


def _authorised(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        response = HttpResponse("metrics token required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


# --- where process metrics are counted -------------------------------------------------------------------


class MetricsMiddleware:
    """Counts every request, and webhook POSTs by their answer (what the inbox cannot see: duplicates)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        HTTP_SECONDS.labels(request.method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(request.method, str(response.status_code)).inc()
        if request.method == "POST" and request.path.startswith("/webhooks/"):
            # An unknown slug (404) is not a label: random paths would grow a series each.
            slug = request.path.removeprefix("/webhooks/").strip("/").split("/")[0][:60]
            if response.status_code == 404:
                slug = "-"
            WEBHOOKS.labels(slug, WEBHOOK_RESULTS.get(response.status_code, "error")).inc()
        return response


_started: dict[str, float] = {}


def task_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def task_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    name = getattr(task, "name", "unknown")
    TASKS.labels(name, state or "UNKNOWN").inc()
    began = _started.pop(task_id or "", None)
    if began is not None:
        TASK_SECONDS.labels(name).observe(time.perf_counter() - began)


def _process_shutdown(**_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def connect_celery_signals() -> None:
    from celery import signals

    signals.worker_process_shutdown.connect(
        _process_shutdown, weak=False, dispatch_uid="fulcrum-metrics-exit"
    )
    signals.task_prerun.connect(task_prerun, weak=False, dispatch_uid="fulcrum-metrics-prerun")
    signals.task_postrun.connect(task_postrun, weak=False, dispatch_uid="fulcrum-metrics-postrun")
