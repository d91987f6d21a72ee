"""A run that reads nothing new while the upstream keeps saying "more" ends as an error, not a success.

The upstream here ignores the page number, or hands back the cursor token it was given: every page repeats
what the run already read. Without a stop the run loops until the upstream relents (here after 30 calls) and
then reports success with nothing new read; the sync service stops it as failed after a few idle pages.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.connectors.models import Connection, StreamState, SyncRun
from apps.connectors.services import STALL_PAGES, connection_import, sync_connection
from apps.entities.models import Project

from .loopback import Upstream, serve

UPDATED = "2026-01-05T10:00:00Z"
RELENT_AFTER = 30  # calls; keeps a run without the stop from looping for ever


def job(n: int) -> dict[str, Any]:
    return {"id": f"J-{n}", "updated": UPDATED, "title": f"Job {n}"}


def _connection(upstream: Upstream, pagination: dict[str, Any]) -> Connection:
    [connection] = connection_import(
        data=[
            {
                "slug": "inhouse",
                "kind": "rest",
                "base_url": upstream.base_url,
                "credentials": {"access_token": "t"},
                "options": {
                    "settle_seconds": 0,
                    "streams": [
                        {
                            "name": "jobs",
                            "entity": "project",
                            "path": "/jobs",
                            "records_path": "data",
                            "pagination": pagination,
                            "id_path": "id",
                            "updated_at_path": "updated",
                            "fields": {"name": "title"},
                        }
                    ],
                },
            }
        ],
        actor="system:test",
    )
    return connection


def _answer(upstream: Upstream, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    if len(upstream.requests) > RELENT_AFTER:
        return 200, {}, json.dumps({"data": []})
    return 200, {}, json.dumps(body)


def test_an_upstream_that_ignores_the_page_number_fails_the_run(db: None, fast_http: None) -> None:
    with serve() as upstream:
        upstream.routes["/jobs"] = lambda query: _answer(upstream, {"data": [job(1), job(2)]})
        connection = _connection(upstream, {"style": "page", "page_size": 2})

        [run] = sync_connection(connection=connection)

    assert run.status == SyncRun.Status.FAILED and run.error.startswith("stalled:")
    assert run.counts["api_calls"] <= STALL_PAGES + 2  # stopped long before the upstream relented
    assert set(Project.objects.values_list("external_id", flat=True)) == {"J-1", "J-2"}  # what it read stays
    assert StreamState.objects.get(connection=connection).last_success_at is None


def test_a_cursor_token_handed_back_unchanged_fails_the_run(db: None, fast_http: None) -> None:
    with serve() as upstream:
        upstream.routes["/jobs"] = lambda query: _answer(
            upstream, {"data": [job(1), job(2)], "next_cursor": "same"}
        )
        connection = _connection(
            upstream,
            {"style": "cursor", "page_size": 2, "cursor_param": "cursor", "next_cursor_path": "next_cursor"},
        )

        [run] = sync_connection(connection=connection)

    assert run.status == SyncRun.Status.FAILED and "stalled" in run.error
    assert run.counts["api_calls"] <= STALL_PAGES + 2


@pytest.mark.parametrize("repeats", [1, STALL_PAGES - 1])
def test_a_page_repeated_now_and_then_is_not_a_stall(db: None, fast_http: None, repeats: int) -> None:
    pages = [[job(1), job(2)]] * (1 + repeats) + [[job(3), job(4)], [job(5)]]
    with serve() as upstream:

        def answer(query: dict[str, str]) -> tuple[int, dict[str, str], str]:
            number = int(query.get("page", "1"))
            return 200, {}, json.dumps({"data": pages[number - 1] if number <= len(pages) else []})

        upstream.routes["/jobs"] = answer
        connection = _connection(upstream, {"style": "page", "page_size": 2})

        [run] = sync_connection(connection=connection)

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert Project.objects.count() == 5


def test_pages_of_distinct_records_without_ids_are_not_a_stall(db: None, fast_http: None) -> None:
    nameless = [[{"updated": UPDATED, "title": f"No id {page}-{n}"} for n in (1, 2)] for page in range(4)]
    pages = [*nameless, [job(1)]]
    with serve() as upstream:

        def answer(query: dict[str, str]) -> tuple[int, dict[str, str], str]:
            number = int(query.get("page", "1"))
            return 200, {}, json.dumps({"data": pages[number - 1] if number <= len(pages) else []})

        upstream.routes["/jobs"] = answer
        connection = _connection(upstream, {"style": "page", "page_size": 2})

        [run] = sync_connection(connection=connection)

    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert run.counts["quarantined"] == 8 and Project.objects.count() == 1
