"""The 90-day trends (from escalation timestamps) and the SVG they are drawn with."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.dashboard import charts, trends
from apps.escalations.models import Escalation
from apps.escalations.tests.test_pages import XSS, login, make_escalation
from tests.factories import ProjectFactory


@pytest.fixture
def noon(db):
    """Today at noon in TIME_ZONE: timestamps a few hours either side stay on the same local day."""
    return timezone.make_aware(dt.datetime.combine(timezone.localdate(), dt.time(12)))


def _at(escalation: Escalation, opened: dt.datetime, closed: dt.datetime | None = None) -> None:
    status = Escalation.Status.RESOLVED if closed else escalation.status
    Escalation.objects.filter(pk=escalation.pk).update(
        opened_at=opened, last_fired_at=opened, closed_at=closed, status=status
    )


def test_a_project_counts_as_flagged_on_every_day_one_of_its_escalations_was_open(noon):
    day = dt.timedelta(days=1)
    a, b = ProjectFactory(), ProjectFactory()
    _at(make_escalation(project=a), noon - 3 * day, closed=noon - 1 * day)
    _at(make_escalation(project=a), noon - 2 * day)  # a second one on A: A still counts once
    _at(make_escalation(project=b), noon - 2 * day)
    _at(
        make_escalation(project=ProjectFactory()), noon - 100 * day, closed=noon - 95 * day
    )  # before the window
    result = trends.trends(now=noon)
    assert len(result.days) == trends.DAYS and result.days[-1] == timezone.localdate(noon)
    assert result.flagged_per_day[-5:] == [0, 1, 2, 2, 2]
    assert sum(result.flagged_per_day) == 1 + 2 + 2 + 2


def test_escalations_opened_per_day_by_route(noon):
    hour = dt.timedelta(hours=1)
    for route, when in [
        ("executive", noon - hour),
        ("executive", noon - 2 * hour),
        ("standard", noon - 26 * hour),
    ]:
        _at(make_escalation(route=route), when)
    result = trends.trends(now=noon)
    assert result.opened_per_day["executive"][-2:] == [0, 2]
    assert result.opened_per_day["standard"][-2:] == [1, 0]
    # newest first; all three are still open today, so three flagged projects
    assert result.day_rows()[0] == (timezone.localdate(noon), 3, [2, 0])


def test_median_time_to_resolve_per_week(noon):
    for hours in (1, 2, 10):
        _at(make_escalation(), noon - dt.timedelta(hours=hours), closed=noon)
    result = trends.trends(now=noon)
    assert result.median_resolve_hours[-1] == 2.0
    assert result.median_resolve_hours[:-1] == [None] * 12
    assert result.weeks[-1].weekday() == 0 and len(result.weeks) == 13


def test_line_chart_is_accessible_and_escaped():
    svg = charts.line_chart(
        chart_id="c1",
        title=f"Title {XSS}",
        labels=["Jan 1", "Jan 2", "Jan 3"],
        series=[charts.Series(XSS, [1, None, 3]), charts.Series("Standard", [0, 2, 2])],
        unit="opened",
    )
    assert XSS not in svg and "&lt;script&gt;" in svg
    assert 'role="img" aria-labelledby="c1-title c1-desc"' in svg
    assert '<title id="c1-title">Title &lt;script&gt;' in svg
    assert "Jan 1 to Jan 3" in svg and "Standard: 4 in total" in svg
    # the gap splits the first series: a dot, a dot; the second is one polyline of three points
    assert svg.count("<circle") == 2 and svg.count("<polyline") == 1


def test_bar_chart_scales_to_a_round_top_and_skips_missing_weeks():
    svg = charts.bar_chart(
        chart_id="c2", title="t", labels=["a", "b", "c"], values=[3.0, None, 7.5], unit="hours"
    )
    assert svg.count("<rect") == 2
    ticks = re.findall(r'text-anchor="end">([^<]+)<', svg)
    assert ticks == ["0", "2", "4", "6", "8"]  # four round steps covering 7.5
    heights = [float(h) for h in re.findall(r'height="([0-9.]+)"', svg)]
    assert heights[1] / heights[0] == pytest.approx(7.5 / 3.0, rel=0.01)
    assert "2 of 3 periods with data; highest 7.5 hours." in svg


@pytest.mark.parametrize(
    ("value", "top"), [(0, 4), (0.4, 4), (3, 4), (4, 4), (7.5, 8), (12, 20), (51, 80), (500, 800)]
)
def test_nice_max(value, top):
    assert charts.nice_max(value) == top


def test_dashboard_draws_the_three_charts_with_their_numbers(client, executive):
    _at(make_escalation(), timezone.now() - dt.timedelta(hours=3), closed=timezone.now())
    body = login(client, executive).get(reverse("dashboard")).content.decode()
    assert body.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 3
    for chart_id in ("chart-flagged", "chart-opened", "chart-resolve"):
        assert f'id="{chart_id}"' in body
    assert "<details" in body and "Median hours to resolve" in body
    today = timezone.localdate()
    monday = today - dt.timedelta(days=today.weekday())
    # the numbers behind the charts: this week's median is the one escalation's 3 hours
    assert (
        f'<time datetime="{monday.isoformat()}">{monday:%b} {monday.day}</time></th><td class="num">3</td>'
        in body
    )
    assert f'<tr><th scope="row"><time datetime="{today.isoformat()}">' in body


def test_flagged_per_day_matches_a_day_by_day_count_for_overlapping_and_gapped_spans(noon):
    """Merged spans and running sums agree with counting each day the slow way."""
    import random

    rng = random.Random(7)
    projects = [ProjectFactory() for _ in range(4)]
    spans = []
    for _ in range(14):
        project = rng.choice(projects)
        start = rng.randint(0, 100)  # some begin before the 90-day window
        end = None if rng.random() < 0.3 else rng.randint(max(0, start - 20), start)
        opened = noon - dt.timedelta(days=start, hours=rng.randint(-11, 11))
        closed = (
            None if end is None else max(opened, noon - dt.timedelta(days=end, hours=rng.randint(-11, 0)))
        )
        _at(make_escalation(project=project), opened, closed=closed)
        spans.append((project.pk, opened, closed))
    result = trends.trends(now=noon)
    for day, count in zip(result.days, result.flagged_per_day, strict=True):
        start = timezone.make_aware(dt.datetime.combine(day, dt.time()))
        end = start + dt.timedelta(days=1)
        expected = {
            pk for pk, opened, closed in spans if opened < end and (closed is None or closed >= start)
        }
        assert count == len(expected), day


def test_cached_trends_are_reused_until_an_escalation_opens_or_closes(noon, django_assert_num_queries):
    day = dt.timedelta(days=1)
    first = make_escalation(project=ProjectFactory())
    _at(first, noon - 2 * day)
    before = trends.cached_trends(now=noon)
    with django_assert_num_queries(1):  # only the key's aggregate
        assert trends.cached_trends(now=noon) == before
    _at(make_escalation(project=ProjectFactory()), noon - 1 * day)  # opened
    opened = trends.cached_trends(now=noon)
    assert opened.flagged_per_day[-2:] == [2, 2] and before.flagged_per_day[-2:] == [1, 1]
    _at(first, noon - 2 * day, closed=noon - 1 * day)  # closed
    assert trends.cached_trends(now=noon).flagged_per_day[-1] == 1
    assert trends.cached_trends(now=noon + day).days[-1] == timezone.localdate(noon + day)  # a new day
