from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.orchestration.api import OrchestrationMapView

from . import views


class Router(SimpleRouter):
    """SPEC writes the action paths without a trailing slash (``POST .../acknowledge``); both forms work."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = Router()
router.register("escalations", views.EscalationViewSet, basename="escalation")
router.register("clients", views.ClientViewSet, basename="client")
router.register("projects", views.ProjectViewSet, basename="project")
router.register("decisions", views.DecisionViewSet, basename="decision")
router.register("evaluation-runs", views.EvaluationRunViewSet, basename="evaluation-run")
router.register("rules", views.RuleViewSet, basename="rule")
router.register("connections", views.ConnectionViewSet, basename="connection")

urlpatterns = [
    path("orchestration/", OrchestrationMapView.as_view(), name="orchestration-map-api"),
    *router.urls,
]
