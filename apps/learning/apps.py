from django.apps import AppConfig


class LearningConfig(AppConfig):
    """The learning loop: rule analytics, threshold suggestions, learned risk ranking, retention."""

    name = "apps.learning"
    label = "learning"
