from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.anchor import anchor_sink, audit_verify_with_anchor
from apps.audit.services import audit_verify
from apps.audit.sinks import FileSink


class Command(BaseCommand):
    help = (
        "Verify the audit hash chain and hold it to the signed anchors kept outside the database "
        "(AUDIT_ANCHOR_SINK, or --anchor FILE). Exit 0 if intact; otherwise non-zero naming the first "
        "problem. A missing, unreadable, unsigned or edited anchor fails too, unless --no-anchor."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--anchor",
            metavar="PATH",
            help="anchor file to check against (default: AUDIT_ANCHOR_SINK or FULCRUM_AUDIT_ANCHOR_FILE)",
        )
        group.add_argument("--no-anchor", action="store_true", help="check the chain alone, explicitly")
        parser.add_argument(
            "--database",
            metavar="NAME",
            help="the database name the anchors were taken from (a backup restored under another name)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["no_anchor"]:
            report = audit_verify()
            note = "not checked against anchors (--no-anchor)"
        else:
            sink = FileSink(Path(options["anchor"])) if options["anchor"] else anchor_sink()
            report = audit_verify_with_anchor(sink=sink, database=options["database"])
            note = f"{report.anchors_checked} anchors hold ({sink.description})"
        if not report.ok:
            if report.source == "anchor" and report.broken_id is None:
                raise CommandError(f"audit anchors: {report.reason}")
            if report.source == "anchor":
                raise CommandError(f"audit chain broken: {report.reason}")
            raise CommandError(
                f"audit chain broken at entry #{report.broken_id}: {report.reason} "
                f"({report.checked} entries verified before it)"
            )
        self.stdout.write(f"audit chain intact: {report.checked} entries; {note}")
