"""SPEC "Actions": ``flag_dashboard`` is what flags a project, on /dashboard/ and in
/api/projects/?flagged=true alike: only while an open escalation whose rule version includes it concerns
the project or one of its change orders or submittals."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.dashboard import queries
from apps.dashboard.tests.test_pages import flagged
from apps.dashboard.trends import flagged_per_day
from apps.escalations.models import Escalation
from apps.escalations.tests.test_pages import login, make_client, make_escalation, make_rule
from tests.factories import ProjectFactory, SubmittalFactory

pytestmark = pytest.mark.django_db

NOTES_ONLY = ("note_crm",)


def _api_flagged(client) -> set[int]:
    body = client.get("/api/projects/", {"flagged": "true", "page_size": 100}).json()
    return {row["id"] for row in body["results"]}


def _dashboard_projects() -> set[int]:
    return {row["project_id"] for row in queries.flagged_projects(queries.EscalationFilters())}


def test_a_rule_without_flag_dashboard_flags_nothing(client, executive):
    flagging = make_escalation(
        project=ProjectFactory(client=make_client(), name="Flagged Harbor Tower"),
        version=make_rule(actions=("flag_dashboard",)),
    )
    quiet = [
        make_escalation(
            project=ProjectFactory(client=make_client(), name=f"Quiet Works {letter}"),
            version=make_rule(actions=NOTES_ONLY),
        )
        for letter in "ABC"
    ]
    login(client, executive)
    assert _dashboard_projects() == {flagging.project_id}
    assert _api_flagged(client) == {flagging.project_id}
    # The flagged-projects table (the approval queue above it lists executive-route change orders).
    body = flagged(client.get(reverse("dashboard")).content.decode())
    assert flagging.project.name in body
    assert all(e.project.name not in body for e in quiet)
    # Every project is listed unflagged by the API, and the quiet ones answer flagged=false.
    rows = {r["id"]: r["flagged"] for r in client.get("/api/projects/", {"page_size": 100}).json()["results"]}
    assert rows[flagging.project_id] is True and all(rows[e.project_id] is False for e in quiet)
    unflagged = client.get("/api/projects/", {"flagged": "false", "page_size": 100}).json()["results"]
    assert {e.project_id for e in quiet} <= {r["id"] for r in unflagged}


def test_only_while_the_escalation_is_open(client, executive):
    escalation = make_escalation(version=make_rule())
    login(client, executive)
    assert _api_flagged(client) == {escalation.project_id} == _dashboard_projects()
    Escalation.objects.filter(pk=escalation.pk).update(
        status=Escalation.Status.RESOLVED, outcome="actioned", closed_at=timezone.now()
    )
    assert _api_flagged(client) == set() == _dashboard_projects()


def test_a_project_escalation_and_a_submittal_escalation_flag_their_project(client, executive):
    version = make_rule()
    project = ProjectFactory(client=make_client())
    submittal = SubmittalFactory(project=project)
    on_submittal = make_escalation(project=project, version=version)
    Escalation.objects.filter(pk=on_submittal.pk).update(subject_type="submittal", subject_id=submittal.pk)
    other = ProjectFactory(client=make_client())
    on_project = make_escalation(project=other, version=version)
    Escalation.objects.filter(pk=on_project.pk).update(subject_type="project", subject_id=other.pk)
    login(client, executive)
    assert _api_flagged(client) == {project.pk, other.pk} == _dashboard_projects()


def test_the_project_row_counts_only_its_flagging_escalations(client, executive):
    project = ProjectFactory(client=make_client())
    make_escalation(project=project, version=make_rule())
    make_escalation(project=project, version=make_rule(actions=NOTES_ONLY))
    [row] = list(queries.flagged_projects(queries.EscalationFilters()))
    assert (row["project_id"], row["open_count"]) == (project.pk, 1)


def test_the_flagged_trend_counts_only_flagging_escalations(executive):
    make_escalation(version=make_rule())
    make_escalation(version=make_rule(actions=NOTES_ONLY))
    today = timezone.localdate()
    counts = flagged_per_day(today - dt.timedelta(days=1), today)
    assert counts[today] == 1
