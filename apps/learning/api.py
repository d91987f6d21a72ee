"""Read-only API of the learning loop: rule analytics, rules that fire together, suggestions, the risk model.

Mounted at ``/api/analytics/``. Readable by whoever may read rules (operations managers, executives,
administrators); account managers and outsiders get 403.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.dateparse import parse_date
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework import status as http
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.rules.models import Rule, SubjectType

from .analytics import rule_analytics, rules_fired_together
from .misses import can_report, miss_report
from .models import LearningSettings, ReportedMiss, RiskModel, ThresholdSuggestion
from .ranking import current_model


class CanReadRules(BasePermission):
    message = "Your account may not read rules."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("rules.view_rule"))


class TimingSerializer(serializers.Serializer):
    n = serializers.IntegerField()
    p50 = serializers.FloatField(allow_null=True, help_text="seconds")
    p90 = serializers.FloatField(allow_null=True, help_text="seconds")


class BreakdownSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
    escalations = serializers.IntegerField()
    positive = serializers.IntegerField()
    negative = serializers.IntegerField()
    false_alarms = serializers.IntegerField()
    labelled = serializers.IntegerField()
    precision = serializers.FloatField(allow_null=True)
    false_alarm_ratio = serializers.FloatField(allow_null=True)
    acknowledge = TimingSerializer()
    resolve = TimingSerializer()


class VersionStatsSerializer(BreakdownSerializer):
    rule_key = serializers.CharField()
    version = serializers.IntegerField()
    fires = serializers.IntegerField()
    subjects = serializers.IntegerField()
    repeat_ratio = serializers.FloatField(allow_null=True)
    outcomes = serializers.DictField(child=serializers.IntegerField())
    by_route = BreakdownSerializer(many=True)
    by_account_manager = BreakdownSerializer(many=True)


class CoFiringSerializer(serializers.Serializer):
    rule_a = serializers.CharField()
    rule_b = serializers.CharField()
    pairs = serializers.IntegerField()
    subjects = serializers.IntegerField()


class SuggestionSerializer(serializers.ModelSerializer):
    rule: serializers.SlugRelatedField[Rule] = serializers.SlugRelatedField(slug_field="key", read_only=True)
    version = serializers.IntegerField(source="rule_version.number", read_only=True)

    class Meta:
        model = ThresholdSuggestion
        fields = [
            "id", "rule", "version", "path", "fact", "op", "current_value", "proposed_value", "current",
            "proposed", "newly_matching", "no_longer_matching", "replayed", "shadow_rows", "miss_cost",
            "false_alarm_cost", "status", "created_at",
        ]  # fmt: skip


class RiskModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = RiskModel
        fields = ["version", "trained_at", "n_samples", "n_positive", "coefficients", "intercept", "metrics"]


class RiskStatusSerializer(serializers.Serializer):
    active = serializers.BooleanField(help_text="False: dashboards rank by severity")
    min_labels = serializers.IntegerField()
    model = RiskModelSerializer(allow_null=True)


_FILTERS = [
    OpenApiParameter("rule", str, description="a rule key"),
    OpenApiParameter("since", dt.date, description="only fires and escalations from this date (YYYY-MM-DD)"),
]


def _since(request: Request) -> dt.datetime | None:
    raw = request.query_params.get("since")
    if not raw:
        return None
    day = parse_date(raw)
    if day is None:
        raise ValidationError({"since": "a date as YYYY-MM-DD"})
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


class RuleAnalyticsView(APIView):
    """Per rule version: fires, subjects, precision, false-alarm and repeat ratios, p50/p90 times."""

    permission_classes = [CanReadRules]

    @extend_schema(parameters=_FILTERS, responses=VersionStatsSerializer(many=True))
    def get(self, request: Request) -> Response:
        stats = rule_analytics(rule_key=request.query_params.get("rule") or None, since=_since(request))
        return Response([s.as_dict() for s in stats])


class FiredTogetherView(APIView):
    """Pairs of rules whose escalations opened on the same subject within the window."""

    permission_classes = [CanReadRules]

    @extend_schema(
        parameters=[
            *_FILTERS,
            # The range is stated, so a client (and schemathesis) knows what the view accepts.
            OpenApiParameter(
                "window_hours",
                {"type": "integer", "minimum": 1, "maximum": 24 * 365},
                description="default: the setting",
            ),
        ],
        responses=CoFiringSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("window_hours")
        if raw is None:
            hours = LearningSettings.load().cofire_window_hours
        elif raw.isdigit() and 0 < int(raw) <= 24 * 365:
            hours = int(raw)
        else:
            raise ValidationError({"window_hours": "a whole number of hours from 1 to 8760"})
        pairs = rules_fired_together(
            window=dt.timedelta(hours=hours),
            rule_key=request.query_params.get("rule") or None,
            since=_since(request),
        )
        return Response(CoFiringSerializer(pairs, many=True).data)


@extend_schema(
    parameters=[
        OpenApiParameter(
            "status", str, enum=[c.value for c in ThresholdSuggestion.Status], description="filter"
        )
    ]
)
class SuggestionListView(ListAPIView[ThresholdSuggestion]):
    """Threshold suggestions, open ones first (``?status=`` to filter)."""

    permission_classes = [CanReadRules]
    serializer_class = SuggestionSerializer

    def get_queryset(self) -> Any:
        qs = ThresholdSuggestion.objects.select_related("rule", "rule_version").order_by("-created_at", "-id")
        status = self.request.query_params.get("status")
        return qs.filter(status=status) if status else qs


class RiskModelView(APIView):
    """Whether the learned ranking is active, and the model it uses."""

    permission_classes = [CanReadRules]

    @extend_schema(responses=RiskStatusSerializer)
    def get(self, request: Request) -> Response:
        model = current_model()
        data = {
            "active": model is not None,
            "min_labels": LearningSettings.load().min_labels_for_ranking,
            "model": RiskModelSerializer(model).data if model else None,
        }
        return Response(data)


class Conflict(APIException):
    status_code = 409
    default_detail = "The request contradicts itself or the data."
    default_code = "conflict"


class MissSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(
        source="rule.key", required=False, allow_null=True, help_text="a rule key (404 if unknown)"
    )
    # The rules' own subject types, so the schema shares one enum with the rest of the API.
    subject_type = serializers.ChoiceField(choices=SubjectType.choices)
    missed_at = serializers.DateTimeField(required=False, help_text="Default: now")
    reported_by = serializers.CharField(source="reported_by.username", read_only=True, default=None)

    class Meta:
        model = ReportedMiss
        fields = [
            "id", "subject_type", "subject_id", "subject_label", "rule", "outcome", "note", "missed_at",
            "facts", "facts_from", "reported_at", "reported_by",
        ]  # fmt: skip
        read_only_fields = ["subject_label", "facts", "facts_from", "reported_at"]


class CanReportMisses(BasePermission):
    message = "Your account may not report misses."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and can_report(request.user))


class MissListCreateView(ListAPIView[ReportedMiss]):
    """Reported misses (GET; an account manager sees the ones they reported) and report one (POST).

    A miss is a subject that should have been escalated, with what was done about it; it is judged on
    the subject's stored facts as of ``missed_at``. Account managers may report only on their own
    clients' subjects (403 otherwise).
    """

    permission_classes = [CanReportMisses]
    serializer_class = MissSerializer

    def get_queryset(self) -> Any:
        from apps.accounts.roles import ADMINISTRATORS, EXECUTIVES, OPERATIONS, in_role

        qs = ReportedMiss.objects.select_related("rule", "reported_by")
        if not in_role(self.request.user, OPERATIONS, EXECUTIVES, ADMINISTRATORS):
            qs = qs.filter(reported_by_id=self.request.user.pk)
        return qs

    @extend_schema(request=MissSerializer, responses={201: MissSerializer, 404: None, 409: None})
    def post(self, request: Request) -> Response:
        serializer = MissSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = (data.get("rule") or {}).get("key")
        rule = Rule.objects.filter(key=key).first() if key else None
        if key and rule is None:
            raise NotFound(f"no rule {key!r}")
        try:
            miss = miss_report(
                subject_type=data["subject_type"],
                subject_id=data["subject_id"],
                outcome=data["outcome"],
                missed_at=data.get("missed_at"),
                rule=rule,
                note=data.get("note", ""),
                actor=request.user,
            )
        except ObjectDoesNotExist as exc:
            raise NotFound(str(exc)) from exc
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        except DjangoValidationError as exc:
            # The fields are each valid; together they contradict (a future day, a rule of another type).
            raise Conflict(exc.messages) from exc
        return Response(MissSerializer(miss).data, status=http.HTTP_201_CREATED)
