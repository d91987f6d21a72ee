"""A page whose upsert PostgreSQL ends in a deadlock is stored again, not the sync failed.

A sync's page locks its records' rows in the page's order while a webhook, or another connection's
publish linking them, may lock the same rows in another. PostgreSQL then ends one of the two
transactions; when it is the page's, the page (its records, quarantine, cursor and counts: one
transaction) is rolled back whole and is stored again at once.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import OperationalError

import apps.connectors.services as services
from apps.connectors.kinds import get_kind
from apps.connectors.models import Connection, SyncRun
from apps.connectors.services import sync_connection
from apps.entities.models import ChangeOrder

from .conftest import Cycle

pytestmark = pytest.mark.django_db(transaction=True)


def _first_page_rows(pm: Connection) -> list[int]:
    """The rows of the change orders' first page on a full read, in the page's order."""
    stream = get_kind(pm).stream("change_orders")
    client = stream.kind.client()
    try:
        page = next(iter(stream.pages(client, {}, True)))
    finally:
        client.close()
    ids = [str(record["id"]) for record in page.records]
    by_external = dict(
        ChangeOrder.objects.filter(source=pm, external_id__in=ids).values_list("external_id", "pk")
    )
    return [by_external[external_id] for external_id in ids]


def test_a_page_ended_by_a_real_deadlock_is_stored_again_and_the_sync_succeeds(
    connections: dict[str, Connection], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.rules.evaluation import triggers

    # No flush queued on the broker (sending one sets up Celery's logging, which drops caplog's handler).
    monkeypatch.setattr(triggers, "flush_soon", lambda **_: None)
    pm = connections["pm"]
    sync_connection(connection=pm)
    rows = _first_page_rows(pm)
    assert len(rows) >= 2
    first, last = rows[0], rows[-1]
    clean = SyncRun.objects.get(connection=pm, stream="change_orders").counts

    # A full read upserts every record again, so the page locks its rows (first, ..., last) in turn; the
    # other session holds the last and then asks for the first.
    with (
        Cycle(
            hold=("UPDATE entities_changeorder SET title = title WHERE id = %s", [last]),
            waits_in="entities_changeorder",
            close=("UPDATE entities_changeorder SET title = title WHERE id = %s", [first]),
        ),
        caplog.at_level(logging.WARNING, logger="apps.connectors.services"),
    ):
        runs = sync_connection(connection=pm, full=True)

    assert "deadlock detected" in caplog.text and "storing a page of pm/change_orders" in caplog.text
    [run] = [r for r in runs if r.stream == "change_orders"]
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    # Counted once: the ended attempt's counts went with its transaction.
    assert run.counts["pages"] == clean["pages"] and run.counts["seen"] == clean["seen"]
    run.refresh_from_db()
    assert run.published_at is not None


def test_a_page_deadlocked_on_every_attempt_fails_its_run_and_keeps_the_cursor(
    connections: dict[str, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried ``PAGE_ATTEMPTS`` times, then the run fails as any error fails it; what was committed stays."""
    import psycopg.errors

    pm = connections["pm"]
    attempts: list[int] = []
    store = services._store_page_once

    def deadlocked(*args: Any, **kwargs: Any) -> list[int]:
        store(*args, **kwargs)  # stored, then ended before commit: nothing of it stays
        attempts.append(1)
        raise OperationalError("deadlock detected") from psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(services, "_store_page_once", deadlocked)
    with pytest.raises(OperationalError):
        sync_connection(connection=pm, streams=["change_orders"])
    assert len(attempts) == services.RETRIED_ATTEMPTS
    run = SyncRun.objects.get(connection=pm, stream="change_orders")
    assert run.status == SyncRun.Status.FAILED and "deadlock detected" in run.error
    assert run.counts["pages"] == 0 and not ChangeOrder.objects.filter(source=pm).exists()
