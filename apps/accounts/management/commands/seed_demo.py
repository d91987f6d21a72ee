from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.demo import DEMO_RULES, demo_connections, seed_demo_users


class Command(BaseCommand):
    help = (
        "Load the demo data set (deterministic): a user per role, the simulator connections, the demo rules."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--simulator-url", default="http://127.0.0.1:8701")
        parser.add_argument("--force", action="store_true", help="allow with DEBUG off (never in production)")

    def handle(self, *args: object, simulator_url: str, force: bool, **options: object) -> None:
        if not settings.DEBUG and not force:
            raise CommandError(
                "seed_demo creates users with a published password; run it with DEBUG=1 (or --force)"
            )
        from apps.connectors.services import connection_import
        from apps.rules.evaluation.services import rules_import

        for line in seed_demo_users():
            self.stdout.write(f"user {line}")
        for connection in connection_import(data=demo_connections(simulator_url), actor="system:seed_demo"):
            self.stdout.write(f"connection {connection.slug} ({connection.kind}) → {connection.base_url}")
        report = rules_import(text=DEMO_RULES.read_text(), actor="system:seed_demo")
        self.stdout.write(f"rules {report}")
