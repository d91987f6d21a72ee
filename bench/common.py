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


def backend_pid() -> int:
    """The process id of the PostgreSQL backend serving Django's default connection (for ``process_cpu``)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def process_cpu(pid: int, *, reaped: bool = False) -> float | None:
    """CPU seconds (user + system) process ``pid`` of this machine has used so far (``/proc``), None when it
    cannot be read (gone, or the server runs elsewhere); ``reaped``: with its children's that have ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11 : 15 if reaped else 13]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def load() -> str:
    """The 1, 5 and 15-minute load averages (``os.getloadavg()``), for a report line."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def say_load(when: str) -> str:
    """Print and return the load average ``when`` ("before" / "after"), with the machine's core count."""
    text = f"load average {when}: {load()} ({os.cpu_count()} cores)"
    print(text, flush=True)
    return text


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
