from django.apps import AppConfig


class RulesConfig(AppConfig):
    name = "apps.rules"
    label = "rules"

    def ready(self) -> None:
        from apps.entities.changes import entities_changed
        from apps.rules.evaluation import custom  # noqa: F401  (installs the loader of operator-defined facts)
        from apps.rules.evaluation.triggers import entities_changed_receive

        entities_changed.connect(entities_changed_receive, dispatch_uid="rules.mark-pending")
