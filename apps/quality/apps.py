from django.apps import AppConfig


class QualityConfig(AppConfig):
    """Data-quality findings: freshness, missing fields, orphans, cross-system conflicts, volume drops."""

    name = "apps.quality"
    label = "quality"

    def ready(self) -> None:
        from apps.entities.changes import entities_changed
        from apps.quality.services import entities_changed_receive

        entities_changed.connect(entities_changed_receive, dispatch_uid="quality.scan-due")
