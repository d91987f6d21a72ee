#!/usr/bin/env python
"""Django's command-line utility. Starts the embedded PostgreSQL/Redis when no servers are configured."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    from config.embedded_servers import ensure_services

    ensure_services()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
