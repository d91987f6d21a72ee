from django.apps import AppConfig


class QualityConfig(AppConfig):
    """Data-quality findings: freshness, missing fields, orphans, cross-system conflicts, volume drops."""

    name = "apps.quality"
    label = "quality"
