"""The bundled upstream simulator over loopback HTTP, and the three connections that speak to it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from apps.connectors.models import Connection
from apps.connectors.services import connection_import
from apps.simulator import PROCORE_COMPANY_ID, REALM_ID, Company, SimulatorServer, generate_company
from apps.simulator.procore import SCHEDULE_CRITICAL_FIELD

SCALE = 0.1


def connection_file(base_url: str) -> list[dict[str, Any]]:
    return [
        {
            "slug": "crm",
            "kind": "hubspot",
            "base_url": base_url,
            "credentials": {"access_token": "sim-hubspot-token"},
            "webhook_secret": "hs-secret",
            "schedule": "*/15 * * * *",
        },
        {
            "slug": "accounting",
            "kind": "quickbooks",
            "base_url": base_url,
            "credentials": {"access_token": "sim-qbo-token"},
            "options": {"realm_id": REALM_ID},
        },
        {
            "slug": "pm",
            "kind": "procore",
            "base_url": base_url,
            "credentials": {"access_token": "sim-procore-token"},
            "options": {
                "company_id": PROCORE_COMPANY_ID,
                "field_map": {"schedule_critical": SCHEDULE_CRITICAL_FIELD},
            },
        },
    ]


@pytest.fixture
def company() -> Company:
    # Generated as of ten minutes ago, so that nothing is inside the connectors' one-minute settle window
    # unless a test puts it there.
    return generate_company(seed=42, scale=SCALE, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))


@pytest.fixture
def simulator(company: Company) -> Iterator[SimulatorServer]:
    with SimulatorServer(company).start() as server:
        yield server


@pytest.fixture
def fast_http(settings: Any) -> None:
    """Retries without real waiting beyond what Retry-After demands."""
    settings.FULCRUM = {
        **settings.FULCRUM,
        "HTTP_TIMEOUT": 5.0,
        "HTTP_MAX_RETRIES": 3,
        "HTTP_BACKOFF_BASE": 0.01,
    }


@pytest.fixture
def connections(db: None, simulator: SimulatorServer, fast_http: None) -> dict[str, Connection]:
    imported = connection_import(data=connection_file(simulator.base_url), actor="system:test")
    return {c.slug: c for c in imported}


class RuleCalls(list[tuple[dict[str, set[int]], str]]):
    def __init__(self) -> None:
        super().__init__()
        self.since: list[dt.datetime | None] = []

    def clear(self) -> None:
        super().clear()
        self.since.clear()


@pytest.fixture
def rule_calls(monkeypatch: pytest.MonkeyPatch) -> RuleCalls:
    """What sync hands to the rules (``triggers.on_entities_changed``), captured instead of queued: each
    call's (changes, trigger), and its ``since`` (the changes' arrival) beside them in ``.since``."""
    import apps.rules.evaluation.triggers as triggers

    calls = RuleCalls()

    def capture(
        changes: dict[str, set[int]], trigger: str = "sync", since: dt.datetime | None = None
    ) -> dict[str, int]:
        calls.append((changes, trigger))
        calls.since.append(since)
        return {}

    monkeypatch.setattr(triggers, "on_entities_changed", capture, raising=False)
    return calls


class Cycle:
    """Another session that closes a lock cycle with this one, for real deadlocks (PostgreSQL's own).

    In a thread, on a connection of its own: ``hold`` (it takes a row lock), then, once a session waits
    for a lock in a statement whose text contains ``waits_in``, ``close`` (it asks for a lock that session
    holds), and commits. Its ``deadlock_timeout`` is 20 s, so the other session detects the cycle first
    and is the one PostgreSQL ends; this one then gets its lock and commits.
    """

    def __init__(self, hold: tuple[str, list[Any]], waits_in: str, close: tuple[str, list[Any]]) -> None:
        import threading

        self.hold, self.waits_in, self.close = hold, waits_in, close
        self.errors: list[BaseException] = []
        self.holding = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> Cycle:
        self.thread.start()
        assert self.holding.wait(10), "the other session never took its lock"
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(30)
        assert not self.errors, self.errors

    def _run(self) -> None:
        import time

        import psycopg
        from django.db import connection as db_connection

        other = psycopg.connect(**db_connection.get_connection_params(), autocommit=False)
        try:
            with other.cursor() as cursor:
                cursor.execute("SET deadlock_timeout = '20s'")
                cursor.execute(*self.hold)
                self.holding.set()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    cursor.execute("SELECT pg_stat_clear_snapshot()")  # else read once per transaction
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND pid <> pg_backend_pid() AND strpos(query, %s) > 0",
                        [self.waits_in],
                    )
                    (waiting,) = cursor.fetchone() or (0,)
                    if waiting:
                        break
                    time.sleep(0.02)
                else:
                    raise AssertionError(f"no session waited for a lock in a statement on {self.waits_in}")
                cursor.execute(*self.close)
            other.commit()
        except BaseException as exc:
            self.errors.append(exc)
            other.rollback()
        finally:
            other.close()
