"""The dashboard's 90-day trends, from escalation timestamps, in three aggregate queries.

Days and weeks are in TIME_ZONE (the company's calendar), so "today" matches the facts and the page.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, FloatField, Max
from django.db.models.functions import TruncDate, TruncWeek
from django.utils import timezone
from django.utils.safestring import SafeString

from apps.escalations.models import Escalation

from . import charts

DAYS = 90
# A day at most; the key already changes with every escalation opened or closed.
CACHE_SECONDS = 24 * 60 * 60


class Median(Aggregate):
    """PostgreSQL's continuous median, in seconds of a duration expression."""

    function = "percentile_cont"
    template = "percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM %(expressions)s))"
    output_field = FloatField()


@dataclass(frozen=True)
class Trends:
    """The three charts and, for the tables beside them, the numbers they draw."""

    days: list[dt.date]
    flagged_per_day: list[int]
    opened_per_day: dict[str, list[int]]  # by route
    weeks: list[dt.date]
    median_resolve_hours: list[float | None]
    flagged_chart: SafeString
    opened_chart: SafeString
    resolve_chart: SafeString

    def day_rows(self) -> list[tuple[dt.date, int, list[int]]]:
        """Newest first: (day, flagged projects, opened per route in ``opened_per_day`` order)."""
        routes = list(self.opened_per_day.values())
        rows = [(d, self.flagged_per_day[i], [r[i] for r in routes]) for i, d in enumerate(self.days)]
        return rows[::-1]


# A project is flagged on a day if one of its escalations whose rule version includes flag_dashboard
# was open at any moment of that (local) day:
# opened on or before it and not closed before it. Each escalation is a span of day numbers in the
# window; a project's overlapping spans are merged (gaps and islands), and each merged span adds +1 on
# its first day and -1 after its last, so the per-day count is a running sum of those changes. The
# work grows with the number of escalations, not with escalations × days (joining the calendar to
# every escalation cost 100-600 ms at 4,000 escalations; expanding each span per day made the planner
# guess a million rows and JIT-compile for a second).
_FLAGGED_CHANGES = """
WITH spans AS (
    SELECT e.project_id,
        GREATEST((e.opened_at AT TIME ZONE %(tz)s)::date - %(first)s::date, 0) AS first_i,
        LEAST(COALESCE((e.closed_at AT TIME ZONE %(tz)s)::date, %(last)s::date), %(last)s::date)
            - %(first)s::date AS last_i
    FROM escalations_escalation e
    WHERE e.project_id IS NOT NULL AND e.opened_at < %(window_end)s
      AND (e.closed_at IS NULL OR e.closed_at >= %(window_start)s)
      -- only escalations whose rule version flags the dashboard (SPEC "Actions": flag_dashboard)
      AND e.rule_version_id IN (
          SELECT id FROM rules_ruleversion WHERE spec -> 'actions' @> '["flag_dashboard"]'::jsonb)
), ordered AS (
    SELECT project_id, first_i, last_i,
        MAX(last_i) OVER (PARTITION BY project_id ORDER BY first_i, last_i
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
    FROM spans
), islands AS (
    SELECT project_id, first_i, last_i,
        COUNT(*) FILTER (WHERE reach IS NULL OR first_i > reach)
            OVER (PARTITION BY project_id ORDER BY first_i, last_i) AS island
    FROM ordered
), merged AS (
    SELECT MIN(first_i) AS first_i, MAX(last_i) AS last_i FROM islands GROUP BY project_id, island
)
SELECT i, SUM(change) FROM (
    SELECT first_i AS i, 1 AS change FROM merged
    UNION ALL
    SELECT last_i + 1, -1 FROM merged
) changes
GROUP BY i
"""


def flagged_per_day(first: dt.date, last: dt.date) -> dict[dt.date, int]:
    window_start = timezone.make_aware(dt.datetime.combine(first, dt.time()))
    window_end = timezone.make_aware(dt.datetime.combine(last + dt.timedelta(days=1), dt.time()))
    params = {
        "first": first,
        "last": last,
        "tz": settings.TIME_ZONE,
        "window_start": window_start,
        "window_end": window_end,
    }
    with connection.cursor() as cursor:
        cursor.execute(_FLAGGED_CHANGES, params)
        changes = dict(cursor.fetchall())
    counts, running = {}, 0
    for i in range((last - first).days + 1):
        running += int(changes.get(i, 0))
        counts[first + dt.timedelta(days=i)] = running
    return counts


def opened_per_day(since: dt.datetime) -> dict[tuple[dt.date, str], int]:
    tz = timezone.get_current_timezone()
    rows = (
        Escalation.objects.filter(opened_at__gte=since)
        .annotate(day=TruncDate("opened_at", tzinfo=tz))
        .values("day", "route")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {(row["day"], row["route"]): row["n"] for row in rows}


def median_resolve_per_week(since: dt.datetime) -> dict[dt.date, float]:
    """Median hours from opened to closed, per week of closing (resolved or dismissed by anyone)."""
    tz = timezone.get_current_timezone()
    took = ExpressionWrapper(F("closed_at") - F("opened_at"), output_field=DurationField())
    rows = (
        Escalation.objects.filter(closed_at__gte=since, closed_at__isnull=False)
        .annotate(week=TruncWeek("closed_at", tzinfo=tz))
        .values("week")
        .annotate(median_s=Median(took))
        .order_by()
    )
    return {_as_date(row["week"]): row["median_s"] / 3600 for row in rows if row["median_s"] is not None}


def _as_date(value: dt.date | dt.datetime) -> dt.date:
    return timezone.localtime(value).date() if isinstance(value, dt.datetime) else value


def cached_trends(now: dt.datetime | None = None) -> Trends:
    """``trends()``, reused until an escalation opens or closes or the day changes.

    The charts cost three aggregate queries and ≈ 30 ms of SVG building per page view, and the dashboard
    reloads itself every minute in every executive's browser; the key is one cheap aggregate that changes
    whenever any of the charted figures can.
    """
    now = now or timezone.now()
    stamp = Escalation.objects.aggregate(
        n=Count("pk"), opened=Max("opened_at"), closed=Max("closed_at"), closed_n=Count("closed_at")
    )
    parts = (timezone.localdate(now), stamp["n"], stamp["opened"], stamp["closed"], stamp["closed_n"])
    key = "dashboard:trends:" + hashlib.sha256(repr(parts).encode()).hexdigest()
    found = cache.get(key)
    if found is None:
        found = trends(now)
        cache.set(key, found, CACHE_SECONDS)
    return found


def trends(now: dt.datetime | None = None) -> Trends:
    now = now or timezone.now()
    today = timezone.localdate(now)
    days = [today - dt.timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    since = timezone.make_aware(dt.datetime.combine(days[0], dt.time()))
    this_week = today - dt.timedelta(days=today.weekday())
    weeks = [this_week - dt.timedelta(weeks=12 - i) for i in range(13)]

    flagged = flagged_per_day(days[0], days[-1])
    opened = opened_per_day(since)
    medians = median_resolve_per_week(timezone.make_aware(dt.datetime.combine(weeks[0], dt.time())))

    flagged_values = [flagged.get(d, 0) for d in days]
    by_route = {route: [opened.get((d, route), 0) for d in days] for route in Escalation.Route.values}
    median_values = [round(medians[w], 1) if w in medians else None for w in weeks]
    labels = charts.day_labels(days)
    week_labels = charts.day_labels(weeks)
    return Trends(
        days=days,
        flagged_per_day=flagged_values,
        opened_per_day=by_route,
        weeks=weeks,
        median_resolve_hours=median_values,
        flagged_chart=charts.line_chart(
            chart_id="chart-flagged",
            title="Flagged projects per day, last 90 days",
            labels=labels,
            series=[charts.Series("Flagged projects", flagged_values)],
            unit="projects",
        ),
        opened_chart=charts.line_chart(
            chart_id="chart-opened",
            title="Escalations opened per day by route, last 90 days",
            labels=labels,
            series=[
                charts.Series(str(Escalation.Route(route).label), values)
                for route, values in by_route.items()
            ],
            unit="opened",
        ),
        resolve_chart=charts.bar_chart(
            chart_id="chart-resolve",
            title="Median time to resolve per week, last 13 weeks",
            labels=week_labels,
            values=median_values,
            unit="hours",
        ),
    )
