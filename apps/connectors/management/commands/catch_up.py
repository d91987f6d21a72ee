"""``manage.py catch_up <slug> [--since ISO | --hours N]``: re-read a connection's change feed after webhook
downtime (QuickBooks: CDC, at most 30 days back), now, in this process."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.connectors.kinds import get_kind
from apps.connectors.models import Connection
from apps.connectors.operations import connection_catch_up


class Command(BaseCommand):
    help = "Catch a connection up after webhook downtime through its vendor's change feed (QuickBooks: CDC)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument(
            "--since",
            help="ISO 8601 instant to re-read from (default: the silence's start, or one retry window)",
        )
        parser.add_argument("--hours", type=float, help="re-read the last N hours")

    def handle(self, *args: Any, **options: Any) -> None:
        connection = Connection.objects.filter(slug=options["slug"]).first()
        if connection is None:
            raise CommandError(f"no connection {options['slug']!r}")
        kind = get_kind(connection)
        if not kind.catches_up:
            raise CommandError(f"{connection.kind} connections have no change feed to catch up from")
        now = timezone.now()
        if options["since"]:
            since = dt.datetime.fromisoformat(options["since"])
            since = since if timezone.is_aware(since) else since.replace(tzinfo=dt.UTC)
        elif options["hours"] is not None:
            since = now - dt.timedelta(hours=options["hours"])
        else:  # the silence's start when webhooks are silent now, else one retry window back
            since = kind.catch_up_start(now)
        counts = connection_catch_up(connection=connection, since=since, actor="system:catch-up")
        self.stdout.write(f"{connection.slug}: caught up since {since.isoformat()}: {counts}")
