from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.connectors.kinds import ConfigurationError, UnknownKind, UnknownStream
from apps.connectors.models import Connection, SyncRun
from apps.connectors.services import SyncAlreadyRunning, sync_connection
from apps.connectors.tasks import summarise


class Command(BaseCommand):
    help = "Sync one connection now (all its streams, or --stream ones), with a progress bar on stderr."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--full", action="store_true", help="re-read everything (deletes nothing)")
        parser.add_argument(
            "--stream", action="append", dest="streams", metavar="NAME", help="only this stream"
        )

    def handle(self, *args: object, slug: str, full: bool, streams: list[str] | None, **options: Any) -> None:
        connection = Connection.objects.filter(slug=slug).first()
        if connection is None:
            known = ", ".join(Connection.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"no connection {slug!r} (known: {known})", returncode=2)
        bars: dict[str, tqdm[Any]] = {}
        quiet = options.get("verbosity", 1) == 0
        # The raw stream under Django's wrapper, which appends a newline to every write and breaks the bar.
        raw_stderr = getattr(self.stderr, "_out", sys.stderr)

        def progress(stream: str, seen: int) -> None:
            if stream not in bars:
                bars[stream] = tqdm(desc=f"{slug}/{stream}", unit=" records", file=raw_stderr, disable=quiet)
            bars[stream].update(seen)

        try:
            runs = sync_connection(connection=connection, full=full, streams=streams, progress=progress)
        except (UnknownKind, UnknownStream, ConfigurationError) as exc:
            raise CommandError(str(exc), returncode=2) from exc
        except SyncAlreadyRunning as exc:
            raise CommandError(str(exc), returncode=3) from exc
        finally:
            for bar in bars.values():
                bar.close()
        summary = summarise(connection, runs)
        if any(run.status != SyncRun.Status.SUCCEEDED for run in runs):
            raise CommandError(summary, returncode=1)
        self.stdout.write(summary)
