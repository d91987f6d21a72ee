from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"

    def ready(self) -> None:
        from .roles import ensure_roles

        # Sent once per app; ensure_roles acts on the last app's, which sees every app's permissions.
        post_migrate.connect(ensure_roles, dispatch_uid="fulcrum-ensure-roles")
