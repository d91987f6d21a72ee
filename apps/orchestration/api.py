"""``GET /api/orchestration/?window=24h``: the orchestration map as JSON (``nodes``, ``edges``, ``counts``).

The same :class:`~apps.orchestration.map.Graph` the page draws. Readable by executives, operations
managers and administrators; account managers get 403, as on the page.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.permissions import sees_everything
from apps.api.serializers import ErrorSerializer

from .map import DEFAULT_WINDOW, HEALTH_STATES, KINDS, WINDOWS, Graph, cached_map, parse_window


class SeesTheMap(BasePermission):
    message = "Your role does not include the orchestration map."

    def has_permission(self, request: Request, view: Any) -> bool:
        return sees_everything(request.user)


class LinkSerializer(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
    url = serializers.CharField(help_text="Where it is configured (admin)")


class NodeSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="kind:key, e.g. rule:co-exec-review, stream:3:change_orders")
    kind = serializers.ChoiceField(choices=KINDS)
    label = serializers.CharField()  # type: ignore[assignment]
    detail = serializers.CharField(allow_blank=True)
    health = serializers.ChoiceField(choices=HEALTH_STATES)
    health_text = serializers.CharField()
    counts = serializers.DictField(
        child=serializers.IntegerField(allow_null=True),
        help_text="Per kind: system {streams, records, webhooks, failed_runs}; stream {records, changed, "
        "runs, failed_runs, lag_seconds}; fact {rules, streams}; rule {facts, evaluations, matched, "
        "not_matched, insufficient_data, error, escalations_opened, escalations_closed}; "
        "action {sent, failed, dead, waiting, rules}; outcome {escalations}",
    )
    links = LinkSerializer(many=True)


class EdgeSerializer(serializers.Serializer):
    source = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.source
    target = serializers.CharField()
    count = serializers.IntegerField(
        allow_null=True, help_text="Records, deliveries or closed escalations along it in the window"
    )
    configured = serializers.BooleanField(help_text="False: seen in the window's traffic only")


class GraphSerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=list(WINDOWS))
    since = serializers.DateTimeField()
    now = serializers.DateTimeField()
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="The window's totals")
    nodes = NodeSerializer(many=True)
    edges = EdgeSerializer(many=True)


def graph_data(graph: Graph) -> dict[str, Any]:
    return {
        "window": graph.window,
        "since": graph.since,
        "now": graph.now,
        "counts": graph.totals(),
        "nodes": [
            {
                "id": n.id,
                "kind": n.kind,
                "label": n.label,
                "detail": n.detail,
                "health": n.health,
                "health_text": n.health_text,
                "counts": n.counts,
                "links": [{"label": what, "url": url} for what, url in n.links],
            }
            for n in graph.nodes
        ],
        "edges": [
            {"source": e.source, "target": e.target, "count": e.count, "configured": e.configured}
            for e in graph.edges
        ],
    }


class OrchestrationMapView(APIView):
    """The orchestration map over a window: systems → streams → facts → rules → actions → outcomes."""

    permission_classes = [SeesTheMap]

    @extend_schema(
        operation_id="orchestration_map",
        parameters=[
            OpenApiParameter("window", str, enum=list(WINDOWS), description=f"default {DEFAULT_WINDOW}")
        ],
        responses={
            200: GraphSerializer,
            400: OpenApiResponse(ErrorSerializer, description="window is not one of 1h, 24h, 7d"),
        },
    )
    def get(self, request: Request) -> Response:
        window = parse_window(request.query_params.get("window"))
        if window is None:
            raise ValidationError({"window": f"one of {', '.join(WINDOWS)}"})
        return Response(GraphSerializer(graph_data(cached_map(window))).data)
