from django.core.management.base import BaseCommand, CommandParser

from apps.rules.evaluation.services import evaluate_subjects
from apps.rules.evaluation.triggers import SUBJECTS


class Command(BaseCommand):
    help = "Evaluate published rules now, in batch."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--subject-type", choices=SUBJECTS)
        parser.add_argument("--all", action="store_true", help="every subject type (the default)")

    def handle(self, *args: object, subject_type: str | None, **options: object) -> None:
        for st in [subject_type] if subject_type else SUBJECTS:
            self.stdout.write(f"{st}: {evaluate_subjects(subject_type=st, trigger='manual')}")
