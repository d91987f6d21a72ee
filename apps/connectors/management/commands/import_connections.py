from __future__ import annotations

import sys
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.connectors.services import ConnectionFileError, connection_import


class Command(BaseCommand):
    help = "Create or update connections from a YAML file (idempotent by slug; secrets stored encrypted)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="connections YAML, or - for stdin")

    def handle(self, *args: object, file: str, **options: object) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
            data = yaml.safe_load(text) or []
        except (OSError, yaml.YAMLError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from exc
        try:
            connections = connection_import(data=data, actor="system:import_connections")
        except ConnectionFileError as exc:
            raise CommandError(f"{file}: " + "; ".join(exc.errors)) from exc
        for connection in connections:
            self.stdout.write(f"{connection.slug} ({connection.kind}) {connection.base_url}")
