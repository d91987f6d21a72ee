from typing import Any

from django.core.management.base import BaseCommand

from apps.entities.resolution import entities_resolve


class Command(BaseCommand):
    help = "Fuzzy-match what exact keys left unlinked now (auto-link, review queue, new clients)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = entities_resolve()
        self.stdout.write(
            f"auto-linked {result.auto_linked}, queued {result.queued} for review, "
            f"{result.new_entities} new client(s)"
        )
