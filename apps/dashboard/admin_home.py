"""The admin home for operators in six queries: sync health, data quality, outbox, the evaluation queue,
open work, noisy rules."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Min, OuterRef, Q, Subquery
from django.utils import timezone

from apps.connectors.models import Connection, SyncRun
from apps.escalations.models import Delivery, Escalation
from apps.quality.models import Finding
from apps.rules.models import Decision, PendingEvaluation

# A stream is stale after twice its schedule's interval (freshness: warn at 2×); without a schedule
# we can read, after a day.
DEFAULT_INTERVAL = dt.timedelta(hours=24)
TOP_RULES = 5
_EVERY_N_MINUTES = re.compile(r"^\*/(\d+) \* \* \* \*$")
_HOURLY = re.compile(r"^\d+ \* \* \* \*$")
_HOURS = re.compile(r"^\d+ \*/(\d+) \* \* \*$")


def schedule_interval(cron: str) -> dt.timedelta:
    """The interval of the common cron shapes (``*/15 * * * *``, ``0 * * * *``, ``0 */6 * * *``)."""
    cron = " ".join(cron.split())
    if m := _EVERY_N_MINUTES.match(cron):
        return dt.timedelta(minutes=int(m.group(1)))
    if _HOURLY.match(cron):
        return dt.timedelta(hours=1)
    if m := _HOURS.match(cron):
        return dt.timedelta(hours=int(m.group(1)))
    return DEFAULT_INTERVAL


@dataclass(frozen=True)
class StreamHealth:
    """One (connection, stream): when it last synced and how its last run ended."""

    connection_id: int
    slug: str
    kind: str
    enabled: bool
    stream: str | None
    last_success_at: dt.datetime | None
    last_status: str | None
    last_error: str
    stale: bool

    @property
    def failing(self) -> bool:
        return self.last_status in (SyncRun.Status.FAILED, SyncRun.Status.PARTIAL)

    @property
    def state(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.failing:
            return "failing"
        if self.stale:
            return "stale"
        return "ok"


def connection_health(now: dt.datetime) -> list[StreamHealth]:
    """Every connection's streams (a connection that never synced appears once, without a stream)."""
    latest = SyncRun.objects.filter(connection=OuterRef("pk"), stream=OuterRef("streams__stream")).order_by(
        "-started_at"
    )
    rows = (
        Connection.objects.values(
            "pk", "slug", "kind", "enabled", "schedule", "streams__stream", "streams__last_success_at"
        )
        .annotate(
            last_status=Subquery(latest.values("status")[:1]),
            last_error=Subquery(latest.values("error")[:1]),
        )
        .order_by("slug", "streams__stream")
    )
    out = []
    for row in rows:
        success: dt.datetime | None = row["streams__last_success_at"]
        limit = 2 * schedule_interval(row["schedule"] or "")
        out.append(
            StreamHealth(
                connection_id=row["pk"],
                slug=row["slug"],
                kind=row["kind"],
                enabled=row["enabled"],
                stream=row["streams__stream"],
                last_success_at=success,
                last_status=row["last_status"],
                last_error=(row["last_error"] or "")[:200],
                stale=success is None or now - success > limit,
            )
        )
    return out


def open_findings() -> list[dict[str, Any]]:
    """Open data-quality findings per kind, errors and warnings apart (kinds with none are left out)."""
    rows = (
        Finding.objects.filter(resolved_at__isnull=True)
        .values("kind")
        .annotate(
            errors=Count("pk", filter=Q(severity=Finding.Severity.ERROR)),
            warnings=Count("pk", filter=Q(severity=Finding.Severity.WARN)),
        )
        .order_by("-errors", "-warnings", "kind")
    )
    labels = dict(Finding.Kind.choices)
    return [{**row, "label": labels.get(row["kind"], row["kind"])} for row in rows]


def outbox_counts() -> dict[str, int]:
    return Delivery.objects.aggregate(
        dead=Count("pk", filter=Q(state=Delivery.State.DEAD)),
        failed=Count("pk", filter=Q(state=Delivery.State.FAILED)),
        waiting=Count("pk", filter=Q(state__in=[Delivery.State.PENDING, Delivery.State.SENDING])),
    )


# Marks are flushed seconds after a change (beat re-runs a lost flush every minute): older is a stall.
EVALUATION_STALL = dt.timedelta(minutes=5)


def evaluation_queue(now: dt.datetime) -> dict[str, Any]:
    """Subjects waiting for evaluation (``PendingEvaluation``) and how long the oldest has waited."""
    queue = PendingEvaluation.objects.aggregate(waiting=Count("pk"), oldest=Min("queued_at"))
    return {**queue, "stalled": bool(queue["oldest"] and now - queue["oldest"] > EVALUATION_STALL)}


def open_escalation_counts() -> dict[str, int]:
    open_ = Escalation.objects.open()
    return open_.aggregate(
        total=Count("pk"),
        **{s: Count("pk", filter=Q(severity=s)) for s in Escalation.SEVERITY_RANK},
        unacknowledged=Count("pk", filter=Q(status=Escalation.Status.OPEN)),
    )


def top_rules(now: dt.datetime, days: int = 7) -> list[dict[str, Any]]:
    """The rules that matched most often in the last ``days`` days (matches, subjects)."""
    since = now - dt.timedelta(days=days)
    rows = (
        Decision.objects.filter(outcome=Decision.Verdict.MATCHED, evaluated_at__gte=since)
        .values("rule_version__rule_id", "rule_version__rule__key", "rule_version__rule__name")
        .annotate(matches=Count("pk"), subjects=Count("subject_id", distinct=True))
        .order_by("-matches", "rule_version__rule__key")[:TOP_RULES]
    )
    return [dict(row) for row in rows]


def admin_home(now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    streams = connection_health(now)
    return {
        "streams": streams,
        "failing": sum(1 for s in streams if s.state == "failing"),
        "stale": sum(1 for s in streams if s.state == "stale"),
        "findings": open_findings(),
        "outbox": outbox_counts(),
        "evaluation": evaluation_queue(now),
        "escalations": open_escalation_counts(),
        "top_rules": top_rules(now),
    }
