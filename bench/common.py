"""What every benchmark needs: a fresh, migrated database of its own on the configured server."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def recreate_database(name: str) -> str:
    """Drop and create ``name`` on the server of DATABASE_URL (or the embedded one); return its URL.

    The URL's query is kept: an embedded PostgreSQL is reached through ``?host=<socket dir>``.
    """
    import psycopg

    sys.path.insert(0, str(ROOT))
    from config.embedded_servers import ensure_services

    ensure_services()
    parts = urlsplit(os.environ["DATABASE_URL"])
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def fresh_django_database(name: str) -> None:
    """Point this process at a fresh ``name`` database, set Django up on test settings, and migrate."""
    os.environ["DATABASE_URL"] = recreate_database(name)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    os.environ.setdefault("CONN_MAX_AGE", "0")
    import django

    django.setup()
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"database {name}: created and migrated in {time.perf_counter() - started:.1f} s")
