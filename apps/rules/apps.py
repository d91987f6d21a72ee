from django.apps import AppConfig


class RulesConfig(AppConfig):
    name = "apps.rules"
    label = "rules"

    def ready(self) -> None:
        from apps.rules.evaluation import custom  # noqa: F401  (installs the loader of operator-defined facts)
