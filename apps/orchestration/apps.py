from django.apps import AppConfig


class OrchestrationConfig(AppConfig):
    """The pipeline that runs decide → act in one transaction; the orchestration map (`/orchestration/`)."""

    name = "apps.orchestration"
    label = "orchestration"
    default_auto_field = "django.db.models.BigAutoField"
