"""The database-derived metrics (SPEC "Operations"), computed by ``metrics_snapshot`` on beat.

``data`` maps a metric name to ``[[labels, value], ...]``. Counters continue from ``state``:
``fulcrum_decisions_total`` adds the decisions written since the last snapshot's highest id, so it never
re-reads the table and never goes down when retention prunes heavy payloads.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from .models import MetricsSnapshot

NAME = "database"
# A decisions counter key: "rule\x1foutcome" (JSON objects need string keys).
_SEP = "\x1f"

Samples = list[list[Any]]


def _sync(data: dict[str, Samples]) -> None:
    from django.db.models import BigIntegerField

    from apps.connectors.models import StreamState, SyncRun

    seen = (
        SyncRun.objects.values("connection__slug", "stream")
        .annotate(n=Sum(Cast(KT("counts__seen"), BigIntegerField())))
        .order_by()
    )
    data["fulcrum_sync_records_total"] = [
        [{"connection": r["connection__slug"], "stream": r["stream"]}, r["n"] or 0] for r in seen
    ]
    now = timezone.now()
    lag = []
    for slug, stream, at in StreamState.objects.values_list("connection__slug", "stream", "last_success_at"):
        if at is not None:
            lag.append([{"connection": slug, "stream": stream}, round((now - at).total_seconds(), 3)])
    data["fulcrum_stream_lag_seconds"] = lag
    # Finished runs whose changes are not linked and marked yet (their worker died before it): the
    # connection's next sync publishes them, so an age past a schedule or two means that keeps failing.
    waiting = (
        SyncRun.objects.unpublished()
        .values("connection__slug")
        .annotate(oldest=Min(Coalesce("finished_at", "started_at")))
        .order_by()
    )
    data["fulcrum_sync_unpublished_oldest_seconds"] = [
        [{"connection": row["connection__slug"]}, round((now - row["oldest"]).total_seconds(), 3)]
        for row in waiting
    ]


def _webhooks(data: dict[str, Samples]) -> None:
    from apps.connectors.models import WebhookDelivery

    rows = WebhookDelivery.objects.values("connection__slug", "status").annotate(n=Count("pk")).order_by()
    data["fulcrum_webhook_inbox"] = [
        [{"connection": r["connection__slug"], "status": r["status"]}, r["n"]] for r in rows
    ]


def _decisions(data: dict[str, Samples], state: dict[str, Any]) -> None:
    from apps.rules.models import Decision

    last_id = int(state.get("decision_id", 0))
    totals: Counter[str] = Counter(state.get("decisions", {}))
    top = Decision.objects.aggregate(top=Max("pk"))["top"] or last_id
    if top > last_id:
        rows = (
            Decision.objects.filter(pk__gt=last_id, pk__lte=top)
            .values("rule_version__rule__key", "outcome")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for r in rows:
            totals[f"{r['rule_version__rule__key']}{_SEP}{r['outcome']}"] += r["n"]
    state["decision_id"] = top
    state["decisions"] = dict(totals)
    data["fulcrum_decisions_total"] = [
        [dict(zip(("rule", "outcome"), key.split(_SEP), strict=True)), n] for key, n in sorted(totals.items())
    ]


def _escalations(data: dict[str, Samples]) -> None:
    from apps.escalations.models import Delivery, Escalation

    rows = (
        Escalation.objects.filter(status__in=Escalation.OPEN_STATES)
        .values("route", "severity")
        .annotate(n=Count("pk"))
        .order_by()
    )
    data["fulcrum_escalations_open"] = [
        [{"route": r["route"], "severity": r["severity"]}, r["n"]] for r in rows
    ]
    outbox = Delivery.objects.values("action", "state").annotate(n=Count("pk")).order_by()
    data["fulcrum_deliveries_total"] = [
        [{"action": r["action"], "status": r["state"]}, r["n"]] for r in outbox
    ]
    dead = sum(r["n"] for r in outbox if r["state"] == Delivery.State.DEAD)
    data["fulcrum_outbox_dead"] = [[{}, dead]]
    due = Delivery.objects.filter(
        state__in=[Delivery.State.PENDING, Delivery.State.FAILED], next_attempt_at__lte=timezone.now()
    ).aggregate(oldest=Min("next_attempt_at"))["oldest"]
    data["fulcrum_outbox_oldest_due_seconds"] = [
        [{}, round((timezone.now() - due).total_seconds(), 3) if due else 0]
    ]


def _pending(data: dict[str, Samples]) -> None:
    from apps.rules.models import PendingEvaluation

    agg = PendingEvaluation.objects.aggregate(
        n=Count("pk"), oldest=Min("queued_at"), failing=Count("pk", filter=Q(attempts__gt=0))
    )
    data["fulcrum_pending_evaluations"] = [[{}, agg["n"]]]
    oldest = agg["oldest"]
    data["fulcrum_pending_evaluation_oldest_seconds"] = [
        [{}, round((timezone.now() - oldest).total_seconds(), 3) if oldest else 0]
    ]
    data["fulcrum_pending_evaluations_retrying"] = [[{}, agg["failing"]]]


@transaction.atomic
def metrics_snapshot_take() -> MetricsSnapshot:
    """Compute every database-derived metric and store it (one row, locked so two workers never race)."""
    started = time.perf_counter()
    snapshot, _ = MetricsSnapshot.objects.get_or_create(name=NAME, defaults={"taken_at": timezone.now()})
    snapshot = MetricsSnapshot.objects.select_for_update().get(pk=snapshot.pk)
    data: dict[str, Samples] = {}
    state = dict(snapshot.state)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = '20s'")
    _sync(data)
    _webhooks(data)
    _decisions(data, state)
    _escalations(data)
    _pending(data)
    audit = state.get("audit")
    if audit:
        data["fulcrum_audit_verify_ok"] = [[{}, 1 if audit["ok"] else 0]]
        data["fulcrum_audit_verify_timestamp_seconds"] = [[{}, audit["at"]]]
    data["fulcrum_metrics_snapshot_seconds"] = [[{}, round(time.perf_counter() - started, 4)]]
    snapshot.data, snapshot.state, snapshot.taken_at = data, state, timezone.now()
    snapshot.save(update_fields=["data", "state", "taken_at"])
    return snapshot


@transaction.atomic
def audit_verification_record(*, ok: bool, reason: str) -> None:
    """Keep the last ``verify_audit`` outcome for ``fulcrum_audit_verify_ok`` (beat, hourly)."""
    snapshot, _ = MetricsSnapshot.objects.get_or_create(name=NAME, defaults={"taken_at": timezone.now()})
    snapshot = MetricsSnapshot.objects.select_for_update().get(pk=snapshot.pk)
    snapshot.state = {**snapshot.state, "audit": {"ok": ok, "reason": reason[:500], "at": time.time()}}
    snapshot.save(update_fields=["state"])
