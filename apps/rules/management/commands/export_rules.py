from django.core.management.base import BaseCommand

from apps.rules.evaluation.services import rules_export


class Command(BaseCommand):
    help = "Print the live version of every rule as YAML (SPEC format)."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write(rules_export(), ending="")
