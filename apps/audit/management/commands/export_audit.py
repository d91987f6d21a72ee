from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.export import export_rows, period, write_jsonl


class Command(BaseCommand):
    help = (
        "Write the audit entries of a period as JSON Lines (id, created_at, actor, action, object_type, "
        "object_id, data, prev_hash, hash), in id order, streamed. Dates are in TIME_ZONE; --until DATE "
        "includes that whole day."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, metavar="DATE", help="YYYY-MM-DD or an ISO datetime")
        parser.add_argument(
            "--until", metavar="DATE", help="YYYY-MM-DD (through that day) or an ISO datetime"
        )
        parser.add_argument("--output", metavar="FILE", help="file to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            window = period(options["since"], options["until"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        rows = export_rows(window)
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as handle:
                summary = write_jsonl(rows, handle)
            target = options["output"]
        else:
            summary = write_jsonl(rows, self.stdout)
            target = "standard output"
        span = f" (#{summary.first_id}–#{summary.last_id})" if summary.count else ""
        self.stderr.write(f"exported {summary.count} audit entries{span} to {target}")
