"""Query-string filters of the list endpoints (django-filter, so they appear in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

import django_filters as filters
from django import forms
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_field

from apps.entities.models import Client, Project
from apps.escalations.models import Escalation
from apps.rules.models import Decision, EvaluationRun, SubjectType

from .serializers import PROJECT_FLAGGED_HELP

# Ids are PostgreSQL bigint: a value past it answered 500 ("bigint out of range", issue 19).
ID_MIN, ID_MAX = 1, 2**63 - 1


class IdField(forms.IntegerField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", ID_MIN)
        kwargs.setdefault("max_value", ID_MAX)
        super().__init__(*args, **kwargs)


@extend_schema_field({"type": "integer", "format": "int64", "minimum": ID_MIN, "maximum": ID_MAX})
class IdFilter(filters.NumberFilter):
    """A row id: whole numbers within bigint only (the stock NumberFilter takes decimals); else 400."""

    field_class = IdField


class EscalationFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Escalation.Status.choices)
    route = filters.ChoiceFilter(choices=Escalation.Route.choices)
    severity = filters.ChoiceFilter(choices=Escalation.Severity.choices)
    client = IdFilter(field_name="client_id", help_text="Client id")
    project = IdFilter(field_name="project_id", help_text="Project id")
    subject_type = filters.ChoiceFilter(choices=SubjectType.choices)
    open = filters.BooleanFilter(method="filter_open", help_text="Open or acknowledged (true) / closed")

    class Meta:
        model = Escalation
        fields = ["status", "route", "severity", "client", "project", "subject_type", "open"]

    def filter_open(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        in_open = {"status__in": Escalation.OPEN_STATES}
        return queryset.filter(**in_open) if value else queryset.exclude(**in_open)


class _FlaggedFilter(filters.FilterSet):
    """``flagged`` is annotated by the viewset (an EXISTS over open escalations)."""

    flagged = filters.BooleanFilter(field_name="flagged", help_text="Has an open escalation")


class ClientFilter(_FlaggedFilter):
    owner_email = filters.CharFilter(field_name="owner__email", lookup_expr="iexact")
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Client
        fields = ["flagged", "owner_email", "name"]


class ProjectFilter(_FlaggedFilter):
    flagged = filters.BooleanFilter(
        field_name="flagged",
        help_text=PROJECT_FLAGGED_HELP,
    )
    client = IdFilter(field_name="client_id", help_text="Client id")
    schedule_status = filters.ChoiceFilter(choices=Project.ScheduleStatus.choices)
    number = filters.CharFilter()

    class Meta:
        model = Project
        fields = ["flagged", "client", "schedule_status", "number"]


class DecisionFilter(filters.FilterSet):
    subject_type = filters.ChoiceFilter(choices=SubjectType.choices)
    subject_id = IdFilter()
    outcome = filters.ChoiceFilter(choices=Decision.Verdict.choices)
    rule = filters.CharFilter(field_name="rule_version__rule__key", help_text="Rule key")

    class Meta:
        model = Decision
        fields = ["subject_type", "subject_id", "outcome", "rule"]


class EvaluationRunFilter(filters.FilterSet):
    subject_type = filters.ChoiceFilter(choices=SubjectType.choices)
    subject_id = IdFilter(method="_evaluated", help_text="Only the runs that evaluated this subject")
    trigger = filters.ChoiceFilter(choices=Decision.Trigger.choices)

    class Meta:
        model = EvaluationRun
        fields = ["subject_type", "subject_id", "trigger"]

    def _evaluated(self, queryset: QuerySet[EvaluationRun], name: str, value: int) -> QuerySet[EvaluationRun]:
        return queryset.filter(subject_ids__contains=[value])  # the GIN index on subject_ids
