from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.anchor import anchor_path, audit_verify_with_anchor
from apps.audit.services import audit_verify


class Command(BaseCommand):
    help = (
        "Verify the audit hash chain, and hold it to the anchors kept outside the database (the configured "
        "anchor file when it exists). Exit 0 if intact; otherwise non-zero naming the first problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--anchor",
            metavar="PATH",
            help="anchor file to check against (default: FULCRUM_AUDIT_ANCHOR_FILE)",
        )
        group.add_argument("--no-anchor", action="store_true", help="check the chain alone")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["no_anchor"]:
            path, note = None, "not checked against anchors (--no-anchor)"
        elif options["anchor"]:
            path = Path(options["anchor"])
            if not path.is_file():
                raise CommandError(f"anchor file not found: {path}")
            note = ""
        else:
            path = anchor_path()
            if not path.is_file():
                path, note = (
                    None,
                    f"no anchor file at {anchor_path()}, so a rewritten or truncated chain would pass",
                )
            else:
                note = ""
        report = audit_verify_with_anchor(path=path) if path is not None else audit_verify()
        if not report.ok:
            if report.source == "anchor":
                raise CommandError(f"audit chain broken: {report.reason}")
            raise CommandError(
                f"audit chain broken at entry #{report.broken_id}: {report.reason} "
                f"({report.checked} entries verified before it)"
            )
        if path is not None:
            note = f"{report.anchors_checked} anchors hold ({path})"
        self.stdout.write(f"audit chain intact: {report.checked} entries; {note}")
