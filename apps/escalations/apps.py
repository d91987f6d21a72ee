from django.apps import AppConfig


class EscalationsConfig(AppConfig):
    name = "apps.escalations"
    label = "escalations"

    def ready(self) -> None:
        # The noise controls register their senders (digest, group, address) with the delivery
        # registry on import; every process that delivers needs them, not only Celery workers.
        from . import noise  # noqa: F401
