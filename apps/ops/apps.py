from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: request/task ids in logs, JSON log lines, Prometheus metrics."""

    name = "apps.ops"
    label = "ops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import context, metrics

        context.connect_celery_signals()
        metrics.connect_celery_signals()
