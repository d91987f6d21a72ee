from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The REST API over escalations, clients, projects, decisions, rules and connections."""

    name = "apps.api"
    label = "api"
