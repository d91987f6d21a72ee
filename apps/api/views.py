"""The REST API's viewsets: querysets scoped to the caller, filters, and thin actions over the services.

Each list endpoint runs a fixed number of queries whatever the page size (``select_related`` or one IN
query per related table a row shows, one prefetch per to-many, ``EXISTS`` for ``flagged``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, Model, OuterRef, Prefetch, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from apps.connectors.models import Connection, StreamState
from apps.entities.models import Client, Project, SourceObject
from apps.escalations import services as escalation_services
from apps.escalations.models import Escalation, EscalationEvent
from apps.rules.engine.ruleset import RulesFileError
from apps.rules.evaluation.services import rule_publish
from apps.rules.models import Decision, EvaluationRun, Rule, RuleVersion

from . import filters, serializers
from .exceptions import Conflict
from .permissions import IsAdministrator, RolePermission, sees_everything
from .services import ConnectionDisabled, connection_resync_request

VIA_API = EscalationEvent.Via.API


# The generic error responses (400, 401, 403, 404, 429) are added to every operation by apps.api.schema.
CONFLICT = {
    409: OpenApiResponse(serializers.ErrorSerializer, description="Not allowed in the object's current state")
}


def _read_schema(list_summary: str, one_summary: str) -> dict[str, Any]:
    return {"list": extend_schema(summary=list_summary), "retrieve": extend_schema(summary=one_summary)}


class ApiViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [RolePermission]
    model: type[Model]  # what RolePermission checks the view/change permission of


def _live_links() -> Prefetch:
    return Prefetch(
        "links",
        queryset=SourceObject.objects.filter(deleted_at__isnull=True)
        .select_related("connection")
        .order_by("connection__slug", "object_type", "external_id"),
    )


@extend_schema_view(
    **_read_schema("Escalations the caller may see", "One escalation with its evidence and timeline")
)
class EscalationViewSet(ApiViewSet):
    """Account managers see their own clients' escalations; the other roles see all of them."""

    model = Escalation
    filterset_class = filters.EscalationFilter

    def get_queryset(self) -> QuerySet[Escalation]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Escalation.objects.none()
        qs = Escalation.objects.visible_to(self.request.user).order_by("-opened_at", "-pk")
        if self.action == "list":
            # No joins in the paged query: PostgreSQL then takes the top rows of the escalations
            # alone (a join first would sort every escalation; 4,000 rows: 100 ms → 15 ms), and the
            # four related tables come in one small IN query each, with only the columns a row shows.
            return qs.defer("evidence_copy").prefetch_related(
                Prefetch("rule", queryset=Rule.objects.only("key")),
                Prefetch("rule_version", queryset=RuleVersion.objects.only("number")),
                Prefetch("client", queryset=Client.objects.only("name")),
                Prefetch("project", queryset=Project.objects.only("number", "name")),
            )
        return qs.select_related(
            "rule", "rule_version", "client", "project", Escalation.EVIDENCE
        ).prefetch_related("events")

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action == "list":
            return serializers.EscalationSerializer
        return serializers.EscalationDetailSerializer

    def _done(self, escalation: Escalation) -> Response:
        fresh = self.get_queryset().get(pk=escalation.pk)
        return Response(serializers.EscalationDetailSerializer(fresh).data)

    def _body(self, serializer_class: type[serializers.NoteSerializer]) -> dict[str, Any]:
        body = serializer_class(data=self.request.data)
        body.is_valid(raise_exception=True)
        return dict(body.validated_data)

    @extend_schema(
        summary="Acknowledge an open escalation",
        request=serializers.NoteSerializer,
        responses={200: serializers.EscalationDetailSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        escalation = self.get_object()
        body = self._body(serializers.NoteSerializer)
        escalation_services.escalation_acknowledge(
            escalation=escalation, actor=request.user, via=VIA_API, note=body["note"]
        )
        return self._done(escalation)

    @extend_schema(
        summary="Resolve an escalation with an outcome",
        request=serializers.ResolveSerializer,
        responses={200: serializers.EscalationDetailSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        escalation = self.get_object()
        body = self._body(serializers.ResolveSerializer)
        escalation_services.escalation_resolve(
            escalation=escalation, actor=request.user, via=VIA_API, outcome=body["outcome"], note=body["note"]
        )
        return self._done(escalation)

    @extend_schema(
        summary="Dismiss an escalation (default outcome false_alarm)",
        request=serializers.DismissSerializer,
        responses={200: serializers.EscalationDetailSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def dismiss(self, request: Request, pk: str | None = None) -> Response:
        escalation = self.get_object()
        body = self._body(serializers.DismissSerializer)
        escalation_services.escalation_dismiss(
            escalation=escalation, actor=request.user, via=VIA_API, outcome=body["outcome"], note=body["note"]
        )
        return self._done(escalation)

    def _decide(self, request: Request, *, approve: bool) -> Response:
        # Who may decide and what can be decided is the service's call (SPEC "Decision rights"): 403 for
        # a role that may not, 409 for anything but a change order on the executive route.
        escalation = self.get_object()
        body = self._body(serializers.NoteSerializer)
        escalation_services.escalation_decide(
            escalation=escalation, actor=request.user, via=VIA_API, approve=approve, note=body["note"]
        )
        return self._done(escalation)

    @extend_schema(
        summary="Approve a change order routed to executives (Executives and Administrators)",
        request=serializers.NoteSerializer,
        responses={200: serializers.EscalationDetailSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(request, approve=True)

    @extend_schema(
        summary="Reject a change order routed to executives (Executives and Administrators)",
        request=serializers.NoteSerializer,
        responses={200: serializers.EscalationDetailSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(request, approve=False)

    @extend_schema(
        summary="Add a note to an escalation's timeline (its state does not change)",
        request=serializers.AddNoteSerializer,
        responses={200: serializers.EscalationDetailSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def note(self, request: Request, pk: str | None = None) -> Response:
        escalation = self.get_object()
        body = self._body(serializers.AddNoteSerializer)
        escalation_services.escalation_note(
            escalation=escalation, actor=request.user, via=VIA_API, note=body["note"]
        )
        return self._done(escalation)


def _open_escalations() -> QuerySet[Escalation]:
    return Escalation.objects.open().order_by()


@extend_schema_view(
    **_read_schema(
        "Clients, with their ids in every source system",
        "One client",
    )
)
class ClientViewSet(ApiViewSet):
    model = Client
    serializer_class = serializers.ClientSerializer
    filterset_class = filters.ClientFilter

    def get_queryset(self) -> QuerySet[Client]:
        if getattr(self, "swagger_fake_view", False):
            return Client.objects.none()
        qs: QuerySet[Client] = Client.objects.filter(deleted_at__isnull=True)
        if not sees_everything(self.request.user):
            qs = qs.filter(owner__user=self.request.user.pk)
        return (
            qs.select_related("source", "owner")
            .annotate(flagged=Exists(_open_escalations().filter(client=OuterRef("pk"))))
            .prefetch_related(_live_links())
            .order_by("name", "pk")
        )


@extend_schema_view(
    **_read_schema(
        "Projects, with their ids in every source system",
        "One project",
    )
)
class ProjectViewSet(ApiViewSet):
    model = Project
    serializer_class = serializers.ProjectSerializer
    filterset_class = filters.ProjectFilter

    def get_queryset(self) -> QuerySet[Project]:
        if getattr(self, "swagger_fake_view", False):
            return Project.objects.none()
        qs: QuerySet[Project] = Project.objects.filter(deleted_at__isnull=True)
        if not sees_everything(self.request.user):
            qs = qs.filter(client__owner__user=self.request.user.pk)
        return (
            qs.select_related("source", "client")
            # Flagged as on the dashboard: an open escalation whose rule version flags it (SPEC "Actions").
            .annotate(flagged=Exists(Escalation.objects.flagging().order_by().filter(project=OuterRef("pk"))))
            .prefetch_related(_live_links())
            .order_by("number", "pk")
        )


@extend_schema_view(
    **_read_schema(
        "Rule decisions, newest first (filter by subject_type and subject_id)",
        "One decision with its facts and explanation",
    )
)
class DecisionViewSet(ApiViewSet):
    model = Decision
    serializer_class = serializers.DecisionSerializer
    filterset_class = filters.DecisionFilter

    def get_queryset(self) -> QuerySet[Decision]:
        return Decision.objects.select_related("rule_version__rule").order_by("-evaluated_at", "-pk")


@extend_schema_view(
    **_read_schema(
        "Bulk evaluation runs, newest first (filter by subject_type, subject_id, trigger). A run's pairs "
        "without a decision of that run repeated the outcome of their rule's previous decision for the "
        "subject (not_matched when there is none).",
        "One bulk evaluation run with its per-rule outcome counts",
    )
)
class EvaluationRunViewSet(ApiViewSet):
    model = EvaluationRun
    serializer_class = serializers.EvaluationRunSerializer
    filterset_class = filters.EvaluationRunFilter

    def get_queryset(self) -> QuerySet[EvaluationRun]:
        return EvaluationRun.objects.defer("subject_ids").order_by("-evaluated_at", "-pk")


@extend_schema_view(
    **_read_schema(
        "Rules with their live version",
        "One rule by key",
    )
)
class RuleViewSet(ApiViewSet):
    model = Rule
    serializer_class = serializers.RuleSerializer
    lookup_field = "key"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"

    def get_queryset(self) -> QuerySet[Rule]:
        return Rule.objects.select_related("live_version").order_by("key")

    @extend_schema(
        summary="Publish the rule's draft as a new version; a worker evaluates it over every subject of "
        "its type at once (operations managers and administrators)",
        request=None,
        responses={200: serializers.PublishResponseSerializer},
    )
    @action(detail=True, methods=["post"])
    def publish(self, request: Request, key: str | None = None) -> Response:
        rule = self.get_object()
        before = rule.live_version_id
        try:
            version = rule_publish(rule=rule, actor=request.user)
        except RulesFileError as exc:
            raise ValidationError({"draft": [str(problem) for problem in exc.errors]}) from exc
        run = version.publish_runs.filter(completed_at__isnull=True).order_by("-pk").first()
        published = version.pk != before
        return Response(
            {
                "rule": rule.key,
                "version": version.number,
                "published": published,
                "evaluation_run": run.pk if run is not None and published else None,
            }
        )


@extend_schema_view(
    **_read_schema(
        "Connections and their streams (never their secrets)",
        "One connection by slug",
    )
)
class ConnectionViewSet(ApiViewSet):
    model = Connection
    serializer_class = serializers.ConnectionSerializer
    lookup_field = "slug"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"

    def get_queryset(self) -> QuerySet[Connection]:
        return Connection.objects.prefetch_related(
            Prefetch("streams", queryset=StreamState.objects.order_by("stream"))
        ).order_by("slug")

    @extend_schema(
        summary="Queue a sync of every stream of the connection (administrators)",
        request=serializers.ResyncSerializer,
        responses={202: serializers.ResyncResponseSerializer, **CONFLICT},
    )
    @action(detail=True, methods=["post"], permission_classes=[RolePermission, IsAdministrator])
    def resync(self, request: Request, slug: str | None = None) -> Response:
        connection = self.get_object()
        body = serializers.ResyncSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        full = bool(body.validated_data["full"])
        try:
            connection_resync_request(connection=connection, actor=request.user, full=full)
        except ConnectionDisabled as exc:
            raise Conflict(str(exc)) from exc
        return Response({"connection": connection.slug, "full": full}, status=status.HTTP_202_ACCEPTED)
