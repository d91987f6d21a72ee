from typing import Any

from django.core.management.base import BaseCommand

from apps.quality.models import Finding
from apps.quality.services import quality_scan


class Command(BaseCommand):
    help = "Run the data-quality checks now; print per kind how many findings are new, seen and resolved."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--kind", action="append", choices=Finding.Kind.values, help="only these kinds")

    def handle(self, *args: Any, **options: Any) -> None:
        for kind, counts in quality_scan(kinds=options["kind"]).items():
            self.stdout.write(
                f"{kind}: {counts['new']} new, {counts['seen']} seen, {counts['resolved']} resolved"
            )
