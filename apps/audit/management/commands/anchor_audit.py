from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.audit.anchor import anchor_path, anchor_write


class Command(BaseCommand):
    help = "Append the audit chain's current head (last id, hash, count) to the anchor file and the log."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--anchor", metavar="PATH", help="anchor file (default: FULCRUM_AUDIT_ANCHOR_FILE)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["anchor"] or anchor_path()
        anchor = anchor_write(path=path)
        head = f"#{anchor.last_id}" if anchor.last_id is not None else "empty chain"
        self.stdout.write(f"anchored {head} ({anchor.count} entries, {anchor.last_hash[:16]}…) in {path}")
