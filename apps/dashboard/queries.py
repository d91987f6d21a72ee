"""Read-side queries for the dashboard (one escalation's page and an account manager's queue read
``apps.escalations.queries``).

Each page runs a fixed number of queries whatever the number of rows (the page tests cap them): projects
are ranked in one statement grouping their open escalations, and what a row shows is fetched in one more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import (
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    JSONField,
    Max,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce

from apps.accounts.access import roles_of
from apps.accounts.roles import ADMINISTRATORS, EXECUTIVES, OPERATIONS
from apps.entities.models import ChangeOrder, Client, CrmOwner, Project
from apps.escalations.models import Escalation
from apps.escalations.queries import OPEN_FIRST, SEVERITY_RANK
from apps.learning.models import LearningSettings, RiskModel, RiskScore
from apps.rules.evaluation.facts import compute_contexts

DASHBOARD_ROLES = (EXECUTIVES, OPERATIONS, ADMINISTRATORS)
# Worst first; more than a screenful is a triage job for the filters, not a longer list.
APPROVAL_QUEUE_LIMIT = 25
# What a flagged-project row and an approval-queue row show (rows.py), and nothing else: not the frozen
# evidence, policy or rule draft (kilobytes of JSON each), nor a dozen timestamps a row (~0.1 ms a row to
# decode). The query-count test fails if a row reaches for a field left out.
FLAGGED_ROW_FIELDS = (
    *("project", "rule", "severity", "summary", "rule__name"),
    *("project__number", "project__name", "project__client"),
    *("project__client__name", "project__client__renewal_date", "project__client__owner"),
    *("project__client__owner__name", "project__client__owner__email"),
)
APPROVAL_ROW_FIELDS = (
    *("subject_label", "severity", "summary", "opened_at", "client", "client__name"),
    *("project", "project__number", "project__name"),
    *Escalation.EVIDENCE_FIELDS,  # the queue shows the amount from it
)
OPEN_CHANGE_ORDER_STATES = (ChangeOrder.Status.DRAFT, ChangeOrder.Status.PENDING)


@dataclass(frozen=True)
class EscalationFilters:
    """What the dashboard's GET filters narrow open escalations to; empty means any."""

    route: str = ""
    severity: str = ""
    owner: int | None = None
    client: int | None = None

    def apply(self, qs: QuerySet[Escalation]) -> QuerySet[Escalation]:
        if self.route:
            qs = qs.filter(route=self.route)
        if self.severity:
            qs = qs.filter(severity=self.severity)
        if self.owner is not None:
            qs = qs.filter(client__owner_id=self.owner)
        if self.client is not None:
            qs = qs.filter(client_id=self.client)
        return qs


def _learned_risk(project: str = "pk") -> Subquery:
    """The stored score of the project at ``project`` (an outer column) from the newest risk model, NULL
    unless that model was trained on enough labelled outcomes (the admin-set minimum): then severity
    ranks alone."""
    newest = RiskModel.objects.order_by("-version").values("pk")[:1]
    minimum = Coalesce(
        Subquery(LearningSettings.objects.values("min_labels_for_ranking")[:1]),
        Value(LearningSettings._meta.get_field("min_labels_for_ranking").default),
    )
    scores = RiskScore.objects.filter(
        project_id=OuterRef(project), risk_model=Subquery(newest), risk_model__n_samples__gte=minimum
    )
    return Subquery(scores.values("score")[:1], output_field=FloatField())


def flagged_projects(filters: EscalationFilters) -> QuerySet[Any, Mapping[str, Any]]:
    """The ranking of flagged projects (an open escalation whose rule version includes ``flag_dashboard``
    concerns the project or one of its change orders or submittals), as rows of ``project_id``,
    ``open_count`` (those escalations), ``worst_rank``, ``latest_fired_at`` and ``risk`` (the learned
    score, or None): by learned risk once a usable model exists, else (and among equals) worst severity
    first, then the most recently fired.

    A project flagged since the last scoring has no score yet and comes first: it is new, and the hourly
    rescoring places it. One pass over the open escalations grouped by project (a correlated subquery
    per flagged project for each figure cost twice as much), so paging it is cheap; what a row shows is
    fetched for the page only, by ``page_projects``.
    """
    return (
        filters.apply(Escalation.objects.flagging())
        .filter(project__isnull=False)
        .values("project_id")
        .annotate(
            open_count=Count("pk"),
            worst_rank=Min(SEVERITY_RANK),
            latest_fired_at=Max("last_fired_at"),
            # An aggregate of the per-project score (the same on every row of a group), not a GROUP BY
            # term: grouped, it was computed again inside the paginator's count.
            risk=Max(_learned_risk("project_id")),
        )
        .order_by(
            F("risk").desc(nulls_first=True),
            "worst_rank",
            "-latest_fired_at",
            "project__number",
            "project_id",
        )
    )


def page_projects(rows: list[Mapping[str, Any]], filters: EscalationFilters) -> list[Project]:
    """The page's projects in ranking order, each with its ranking figures, ``worst`` (its worst open
    escalation under the filters, with its rule), ``open_change_orders`` (draft or pending in the PM
    system) and its client and account manager: one query for the page.

    A project whose escalations all closed since the ranking is no longer flagged and is left out.
    """
    open_cos = (
        ChangeOrder.objects.live()
        .filter(project=OuterRef("project_id"), status__in=OPEN_CHANGE_ORDER_STATES)
        .order_by()
        .values("project")
        .annotate(n=Count("pk"))
        .values("n")
    )
    worst = (
        filters.apply(Escalation.objects.flagging())
        .filter(project_id__in=[row["project_id"] for row in rows])
        .select_related("rule", "project__client__owner")
        .only(*FLAGGED_ROW_FIELDS)
        .annotate(open_change_orders=Coalesce(Subquery(open_cos, output_field=IntegerField()), 0))
        # Why it was flagged, said from the conditions (rows.py): the explanation alone, not the evidence's
        # context snapshot, which is most of its size.
        .annotate(
            why_explanation=Coalesce(
                KeyTransform("explanation", "evidence_copy"),
                KeyTransform("explanation", KeyTransform("explanation", "evidence_decision__explanation")),
                output_field=JSONField(),
            )
        )
        # DISTINCT ON keeps the first row of each project in this order: its worst escalation.
        .order_by("project_id", SEVERITY_RANK, "-last_fired_at", "-pk")
        .distinct("project_id")
    )
    by_project = {escalation.project_id: escalation for escalation in worst}
    projects = []
    for row in rows:
        escalation = by_project.get(row["project_id"])
        project = escalation.project if escalation is not None else None
        if escalation is None or project is None:
            continue
        for name in ("open_count", "worst_rank", "latest_fired_at", "risk"):
            setattr(project, name, row[name])
        project.worst, project.worst_id = escalation, escalation.pk  # type: ignore[attr-defined]
        project.open_change_orders = escalation.open_change_orders  # type: ignore[attr-defined]
        projects.append(project)
    return projects


def attach_context(projects: list[Project]) -> list[Project]:
    """Set ``project.facts`` to its live SPEC facts (project.* and client.*) with their ages.

    The rules' own fact SQL for the page's projects only: one set-based query (plus one for the sync
    ages), so the dashboard and the rules can never disagree about a margin or a renewal countdown.
    """
    if not projects:
        return projects
    contexts = {c.subject_id: c.snapshot() for c in compute_contexts("project", [p.pk for p in projects])}
    for project in projects:
        project.facts = contexts.get(project.pk, {})  # type: ignore[attr-defined]
    return projects


def approval_queue(filters: EscalationFilters) -> list[Escalation]:
    """Open executive-route change orders awaiting a decision: worst first, then the longest waiting."""
    order = ("rank", "opened_at", "pk")
    waiting = filters.apply(
        Escalation.objects.open().filter(route=Escalation.Route.EXECUTIVE, subject_type="change_order")
    )
    # The queue's rows are picked from the escalations alone, then joined: joined first, every waiting
    # escalation's client, project and rule were read only to be sorted away.
    first = waiting.annotate(rank=SEVERITY_RANK).order_by(*order).values("pk")[:APPROVAL_QUEUE_LIMIT]
    return list(
        Escalation.objects.filter(pk__in=first)
        .select_related("client", "project", Escalation.EVIDENCE)
        .only(*APPROVAL_ROW_FIELDS)
        .annotate(rank=SEVERITY_RANK)
        .order_by(*order)
    )


def filter_choices() -> dict[str, list[tuple[int, str]]]:
    """(id, name) of account managers and clients with open escalations, for the filter selects.

    Plain tuples, not model instances: with a thousand flagged clients the select is most of the page.
    """
    open_escalations = Escalation.objects.open().order_by()
    owners = CrmOwner.objects.filter(Exists(open_escalations.filter(client__owner=OuterRef("pk"))))
    clients = Client.objects.filter(Exists(open_escalations.filter(client=OuterRef("pk"))))
    return {
        "owners": list(owners.order_by("name", "pk").values_list("pk", "name")),
        "clients": list(clients.order_by("name", "pk").values_list("pk", "name")),
    }


__all__ = ["OPEN_FIRST", "SEVERITY_RANK", "roles_of"]  # imported from here by pages and the API
