"""The flagged-projects ranking (one grouped pass over open escalations, then the page's rows) agrees with
its definition: per project, correlated subqueries over its open escalations under the filters."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest
from django.db.models import Exists, F, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.dashboard import queries
from apps.entities.models import ChangeOrder, Project
from apps.escalations.models import Escalation
from apps.escalations.tests.test_pages import make_client, make_escalation, make_rule
from apps.learning.models import LearningSettings, RiskModel, RiskScore
from tests.factories import ChangeOrderFactory, ProjectFactory

from .test_pages import _risk_model

pytestmark = pytest.mark.django_db


def reference_ranking(filters: queries.EscalationFilters) -> QuerySet[Project]:
    """The ranking as first written: every figure a correlated subquery of the project's open escalations."""
    from django.db.models import Count

    open_here = filters.apply(Escalation.objects.open()).filter(project=OuterRef("pk")).order_by()
    worst = open_here.annotate(rank=queries.SEVERITY_RANK).order_by("rank", "-last_fired_at", "-pk")
    counted = open_here.values("project").annotate(n=Count("pk")).values("n")
    open_cos = (
        ChangeOrder.objects.live()
        .filter(project=OuterRef("pk"), status__in=queries.OPEN_CHANGE_ORDER_STATES)
        .order_by()
        .values("project")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Project.objects.filter(Exists(open_here))
        .annotate(
            open_count=Subquery(counted, output_field=IntegerField()),
            worst_rank=Subquery(worst.values("rank")[:1]),
            worst_id=Subquery(worst.values("pk")[:1]),
            latest_fired_at=Subquery(open_here.order_by("-last_fired_at").values("last_fired_at")[:1]),
            open_change_orders=Coalesce(Subquery(open_cos, output_field=IntegerField()), 0),
            risk=queries._learned_risk(),
        )
        .order_by(F("risk").desc(nulls_first=True), "worst_rank", "-latest_fired_at", "number", "pk")
    )


FIGURES = ("pk", "open_count", "worst_rank", "worst_id", "latest_fired_at", "open_change_orders", "risk")


def ranked(filters: queries.EscalationFilters, page: slice = slice(None)) -> list[tuple]:
    rows = list(queries.flagged_projects(filters)[page])
    return [tuple(getattr(p, f) for f in FIGURES) for p in queries.page_projects(rows, filters)]


def expected(filters: queries.EscalationFilters, page: slice = slice(None)) -> list[tuple]:
    return [tuple(getattr(p, f) for f in FIGURES) for p in reference_ranking(filters)[page]]


@pytest.fixture
def flagged_fixture(account_manager) -> dict:
    """Projects with one to four escalations of mixed routes, severities and states, ties on severity and
    last fire (then the project number decides), open change orders on some."""
    rng = random.Random(11)
    version = make_rule()
    mine = make_client(owner_user=account_manager)
    clients = [mine, make_client(), make_client()]
    tied_at = timezone.now() - dt.timedelta(hours=2)
    numbers = itertools.count(100)
    projects = []
    for i in range(14):
        # Numbers out of creation order, so "number" and "pk" tie-breaks differ.
        project = ProjectFactory(client=clients[i % 3], number=f"P-{900 - next(numbers) * (1 + i % 2)}")
        projects.append(project)
        for _ in range(rng.randint(1, 4)):
            escalation = make_escalation(
                project=project,
                version=version if rng.random() < 0.5 else None,
                route=rng.choice(["executive", "standard"]),
                severity=rng.choice(["low", "medium", "high", "critical"]),
                status=rng.choice([*Escalation.OPEN_STATES, *Escalation.OPEN_STATES, "resolved"]),
                fired_ago=dt.timedelta(minutes=rng.randint(1, 5_000)),
            )
            if i % 4 == 0:  # same severity and last fire on several projects: ties
                Escalation.objects.filter(pk=escalation.pk).update(severity="high", last_fired_at=tied_at)
        for _ in range(rng.randint(0, 2)):
            ChangeOrderFactory(project=project, status=rng.choice(["draft", "pending", "approved"]))
    return {"projects": projects, "mine": mine}


def _filter_sets(fixture: dict) -> list[queries.EscalationFilters]:
    return [
        queries.EscalationFilters(),
        queries.EscalationFilters(route="executive"),
        queries.EscalationFilters(severity="high"),
        queries.EscalationFilters(owner=fixture["mine"].owner_id),
        queries.EscalationFilters(client=fixture["mine"].pk, route="standard"),
    ]


def test_ranking_matches_its_definition_without_a_learned_model(flagged_fixture):
    for filters in _filter_sets(flagged_fixture):
        want = expected(filters)
        assert want, filters  # the fixture flags projects under every filter set
        assert ranked(filters) == want, filters
        assert queries.flagged_projects(filters).count() == len(want)
    assert all(row[-1] is None for row in ranked(queries.EscalationFilters()))


def test_ranking_matches_its_definition_with_learned_scores(flagged_fixture):
    model = _risk_model(n_samples=500)
    scored = flagged_fixture["projects"][::2]  # the rest are "new": unscored, ranked first
    for project, score in zip(scored, (0.2, 0.9, 0.2, 0.5, 0.9, 0.1, 0.7), strict=False):
        RiskScore.objects.create(
            project_id=project.pk, risk_model=model, score=score, scored_at=timezone.now()
        )
    for filters in _filter_sets(flagged_fixture):
        assert ranked(filters) == expected(filters), filters
    rows = ranked(queries.EscalationFilters())
    assert {row[-1] for row in rows} > {None, 0.9, 0.2}
    # Paged: each page is the same slice of the ranking.
    for page in (slice(0, 5), slice(5, 10), slice(10, 15)):
        assert ranked(queries.EscalationFilters(), page) == expected(queries.EscalationFilters(), page)
    # Too few labels for the admin-set minimum: severity ranks alone again.
    LearningSettings.objects.update_or_create(pk=1, defaults={"min_labels_for_ranking": 501})
    assert ranked(queries.EscalationFilters()) == expected(queries.EscalationFilters())
    assert all(row[-1] is None for row in ranked(queries.EscalationFilters()))
    assert RiskModel.objects.count() == 1


def test_a_project_closed_after_the_ranking_drops_out_of_its_page():
    first = make_escalation(severity="critical")
    second = make_escalation(severity="low")
    rows = list(queries.flagged_projects(queries.EscalationFilters()))
    Escalation.objects.filter(pk=first.pk).update(status=Escalation.Status.RESOLVED)
    projects = queries.page_projects(rows, queries.EscalationFilters())
    assert [p.pk for p in projects] == [second.project_id]
    assert projects[0].worst == second and projects[0].client == second.project.client


def test_approval_queue_is_the_worst_then_longest_waiting_first_25():
    version = make_rule()
    rng = random.Random(5)
    for _ in range(queries.APPROVAL_QUEUE_LIMIT + 8):
        make_escalation(
            version=version,
            severity=rng.choice(["low", "medium", "high", "critical"]),
            fired_ago=dt.timedelta(minutes=rng.randint(1, 500)),
        )
    make_escalation(route="standard", severity="critical")  # not routed to executives
    waiting = [e for e in Escalation.objects.open() if e.route == Escalation.Route.EXECUTIVE]
    want = sorted(waiting, key=lambda e: (Escalation.SEVERITY_RANK[e.severity], e.opened_at, e.pk))
    queue = queries.approval_queue(queries.EscalationFilters())
    assert [e.pk for e in queue] == [e.pk for e in want[: queries.APPROVAL_QUEUE_LIMIT]]
    high = queries.approval_queue(queries.EscalationFilters(severity="high"))
    assert [e.pk for e in high] == [e.pk for e in want if e.severity == "high"][
        : queries.APPROVAL_QUEUE_LIMIT
    ]
