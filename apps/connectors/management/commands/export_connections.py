from __future__ import annotations

import yaml
from django.core.management.base import BaseCommand

from apps.connectors.services import connection_export


class Command(BaseCommand):
    help = "Print every connection as YAML (credentials and webhook secrets are never exported)."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write(yaml.safe_dump(connection_export(), sort_keys=False, allow_unicode=True), ending="")
