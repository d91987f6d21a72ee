from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.audit.anchor import anchor_sink, anchor_write
from apps.audit.sinks import FileSink


class Command(BaseCommand):
    help = "Store the audit chain's head (last id, hash, count), signed, in the anchor sink and the log."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--anchor", metavar="PATH", help="anchor file (default: AUDIT_ANCHOR_SINK or the anchor file)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sink = FileSink(options["anchor"]) if options["anchor"] else anchor_sink()
        anchor = anchor_write(sink=sink)
        head = f"#{anchor.last_id}" if anchor.last_id is not None else "empty chain"
        self.stdout.write(
            f"anchored {head} ({anchor.count} entries, {anchor.last_hash[:16]}…) in {sink.description}"
        )
