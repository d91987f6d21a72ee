"""The dashboard's 90-day trends, from escalation timestamps, in three aggregate queries.

Days and weeks are in TIME_ZONE (the company's calendar), so "today" matches the facts and the page.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, FloatField
from django.db.models.functions import TruncDate, TruncWeek
from django.utils import timezone
from django.utils.safestring import SafeString

from apps.escalations.models import Escalation

from . import charts

DAYS = 90


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


# A project is flagged on a day if one of its escalations was open at any moment of that day.
_FLAGGED_PER_DAY = """
SELECT day::date, COUNT(DISTINCT e.project_id)
FROM generate_series(%(first)s::timestamp, %(last)s::timestamp, interval '1 day') AS day
LEFT JOIN escalations_escalation e
  ON e.project_id IS NOT NULL
 AND e.opened_at < ((day + interval '1 day') AT TIME ZONE %(tz)s)
 AND (e.closed_at IS NULL OR e.closed_at >= (day AT TIME ZONE %(tz)s))
GROUP BY day ORDER BY day
"""


def flagged_per_day(first: dt.date, last: dt.date) -> dict[dt.date, int]:
    with connection.cursor() as cursor:
        cursor.execute(_FLAGGED_PER_DAY, {"first": first, "last": last, "tz": settings.TIME_ZONE})
        return dict(cursor.fetchall())


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
