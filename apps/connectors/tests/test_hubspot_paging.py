"""HubSpot's company pager over ties of ``hs_lastmodifieddate``: every record read, every walk ends, and a
walk that cannot move ends as an error.

The regression: a block of companies sharing one modified time, of exactly a multiple of the 200-row page
(two pages or more), ended each run at the block (the walk by id said "no more", and that was taken for the
whole query), so the records after it were never read and every run reported success.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import apps.connectors.kinds.hubspot.streams as hubspot_streams
from apps.connectors.http import CallStats
from apps.connectors.kinds.base import Page
from apps.connectors.kinds.hubspot import HubSpot
from apps.connectors.kinds.hubspot.streams import Companies, PagingStalled
from apps.connectors.models import Connection
from apps.simulator import hubspot as sim_hubspot
from apps.simulator.common import Request
from apps.simulator.records import Company, HsCompany
from apps.simulator.state import DEFAULT_TOKENS, SimState

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
BASE_MS = int((NOW - dt.timedelta(days=2)).timestamp() * 1000)


class InProcess:
    """The simulator's search handler called directly (no socket): fast enough for hypothesis."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.stats = CallStats()
        self.bodies: list[dict[str, Any]] = []

    def post_json(self, path: str, body: Any, headers: Any = None) -> Any:
        self.bodies.append(body)
        request = Request(
            "POST",
            path,
            "",
            {"authorization": f"Bearer {DEFAULT_TOKENS['hubspot']}"},
            json.dumps(body).encode(),
            "http://sim",
        )
        response = sim_hubspot.handle(self.state, request)
        assert response is not None and response.status == 200, response and response.body
        return json.loads(response.body)


def world(blocks: list[tuple[int, int]], seed: int = 0) -> Company:
    """Companies in blocks of (count, seconds after BASE): each block shares one modified time. Ids are
    shuffled so that id order and insertion order disagree."""
    company = Company(seed=seed, scale=0, today=NOW.date(), now=NOW)
    total = sum(count for count, _ in blocks)
    ids = random.Random(seed).sample(range(1_000, 1_000 + 5 * total + 10), total)
    it = iter(ids)
    for count, offset in blocks:
        for _ in range(count):
            object_id = str(next(it))
            company.hs_companies[object_id] = HsCompany(
                object_id, f"Co {object_id}", "", "", None, "", "", "", 1, BASE_MS, BASE_MS + offset * 1000
            )
    return company


def kind() -> HubSpot:
    options = {"settle_seconds": 0, "search_rate_budget": False, "rate_budget": False}
    return HubSpot(Connection(slug="crm", kind="hubspot", options=options))


def read(company: Company, cursor: dict[str, Any], *, shuffle: bool = True) -> tuple[list[Page], InProcess]:
    state = SimState(company, dict(DEFAULT_TOKENS), hubspot_shuffle_ties=shuffle)
    client = InProcess(state)
    pages = list(Companies(kind()).pages(client, cursor, full=not cursor))  # type: ignore[arg-type]
    return pages, client


def ids(pages: list[Page]) -> set[str]:
    return {r["id"] for page in pages for r in page.records}


@pytest.fixture
def page_size(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def set_size(size: int) -> None:
        monkeypatch.setattr(hubspot_streams, "SEARCH_PAGE", size)

    yield set_size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.sampled_from([1, 2, 3, 5, 7]),
    multiple=st.integers(min_value=0, max_value=5),
    extra=st.sampled_from([-1, 0, 0, 0, 1]),
    before=st.integers(min_value=0, max_value=12),
    after=st.integers(min_value=0, max_value=12),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_any_tie_at_any_small_page_size_is_read_whole_and_the_records_after_it_too(
    page_size: Any, size: int, multiple: int, extra: int, before: int, after: int, seed: int
) -> None:
    page_size(size)
    tie = max(0, multiple * size + extra)  # exact multiples of the page most often, and their neighbours
    company = world([(1, 1)] * before + [(tie, 100)] + [(1, 200 + i) for i in range(after)], seed)
    pages, client = read(company, {})
    assert ids(pages) == set(company.hs_companies)
    # Each record is read at most about twice (re-anchoring, and a tie's first page read again by id).
    assert len(client.bodies) <= 2 * (len(company.hs_companies) // size) + 4
    assert all(body["after"] == "0" for body in client.bodies)  # no query is ever paged


@pytest.mark.parametrize("size", [199, 200, 201, 400])
@pytest.mark.parametrize("tie", [199, 200, 201, 400, 600])
def test_ties_at_the_real_page_size_do_not_stop_incremental_sync(page_size: Any, size: int, tie: int) -> None:
    """The reported stall: after the first run over the tie, later edits must still be read."""
    page_size(min(size, 200))  # the search caps limit at 200: larger configured pages mean 200
    company = world([(3, 1), (tie, 50), (2, 60)])
    first, _ = read(company, {})
    assert ids(first) == set(company.hs_companies)
    cursor = first[-1].cursor
    # An edit after the run: the next incremental run must reach it past the tie (inside the lookback).
    later = company.hs_companies[next(iter(company.hs_companies))]
    later.updated = BASE_MS + 70 * 1000
    company.changed()
    second, _ = read(company, cursor)
    assert later.id in ids(second)
    assert second[-1].cursor["updated_at"] > cursor["updated_at"]


def test_a_whole_page_of_one_time_is_walked_by_id_from_the_start_of_the_tie(page_size: Any) -> None:
    """With ties shuffled (HubSpot defines no order within them) the time-sorted page holds arbitrary
    members of the tie: walking on from its highest id would skip the lower ids it did not hold."""
    page_size(5)
    company = world([(23, 10)], seed=3)
    pages, client = read(company, {}, shuffle=True)
    assert ids(pages) == set(company.hs_companies)
    tie_queries = [b for b in client.bodies if b["sorts"][0]["propertyName"] == "hs_object_id"]
    first_gt = next(f for f in tie_queries[0]["filterGroups"][0]["filters"] if f["operator"] == "GT")
    assert first_gt == {"propertyName": "hs_object_id", "operator": "GT", "value": "0"}


class Stuck(InProcess):
    """An upstream that answers every search with the same page and a ``paging.next``."""

    def post_json(self, path: str, body: Any, headers: Any = None) -> Any:
        page = super().post_json(path, {**body, "filterGroups": []})
        page["paging"] = {"next": {"after": "200"}}
        return page


def test_a_walk_that_reads_nothing_new_while_upstream_says_more_is_an_error_not_success() -> None:
    company = world([(3, 1), (2, 5)])
    client = Stuck(SimState(company, dict(DEFAULT_TOKENS)))
    pages = Companies(kind()).pages(client, {"updated_at": NOW.isoformat(), "id": "1"}, False)  # type: ignore[arg-type]
    with pytest.raises(PagingStalled, match="does not move past"):
        for _ in range(10):
            next(pages)


def test_an_empty_page_that_says_more_follow_is_an_error() -> None:
    class Empty(InProcess):
        def post_json(self, path: str, body: Any, headers: Any = None) -> Any:
            super().post_json(path, body)
            return {"total": 7, "results": []}

    client = Empty(SimState(world([(7, 1)]), dict(DEFAULT_TOKENS)))
    with pytest.raises(PagingStalled, match="empty page"):
        list(Companies(kind()).pages(client, {}, True))  # type: ignore[arg-type]


def test_a_tie_walk_that_stops_moving_is_an_error(page_size: Any) -> None:
    page_size(3)

    class Repeats(InProcess):
        def post_json(self, path: str, body: Any, headers: Any = None) -> Any:
            page = super().post_json(path, body)
            if body["sorts"][0]["propertyName"] == "hs_object_id":
                again = {**body, "filterGroups": [{"filters": body["filterGroups"][0]["filters"][:1]}]}
                page = super().post_json(path, again)  # ignores the id filter: the same first ids again
                page["paging"] = {"next": {"after": "3"}}
            return page

    client = Repeats(SimState(world([(9, 1)]), dict(DEFAULT_TOKENS)))
    with pytest.raises(PagingStalled, match="stop at id"):
        list(Companies(kind()).pages(client, {}, True))  # type: ignore[arg-type]


# ---- over loopback, into the database ------------------------------------------------------------------


def _plant_tie(company: Company, count: int, at: dt.datetime) -> list[str]:
    stamp = int(at.timestamp()) * 1000
    planted = []
    with company.lock:
        start = max(int(i) for i in company.hs_companies) + 1
        for n in range(count):
            object_id = str(start + n)
            company.hs_companies[object_id] = HsCompany(
                object_id, f"Tied {n}", f"tied{n}.example", "", None, "", "", "", 5, stamp, stamp
            )
            planted.append(object_id)
        company.changed()
    return planted


@pytest.mark.parametrize("tie", [199, 200, 201, 400, 10_000])
def test_a_tie_of_any_size_over_loopback_is_loaded_and_incremental_sync_goes_on_past_it(
    connections: dict[str, Connection], company: Company, simulator: Any, tie: int
) -> None:
    from apps.connectors.services import sync_stream
    from apps.entities.models import Client

    simulator.state.hubspot_shuffle_ties = True
    crm = connections["crm"]
    if tie >= 10_000:  # ~55 searches: the real 4/s search budget would only add waiting to the test
        crm.options = {**crm.options, "search_rate_budget": False}
        crm.save()
    sync_stream(connection=crm, stream="owners")
    _plant_tie(company, tie, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4))
    first = sync_stream(connection=crm, stream="companies", full=True)
    assert first.status == "succeeded", first.error
    assert Client.objects.filter(source=crm).count() == len(company.hs_companies)

    # A company edited after the tie: the next incremental run reads it (the stall never got here).
    edited = company.hs_companies[min(company.hs_companies, key=int)]
    with company.lock:
        edited.name = "Edited after the tie"
        edited.updated = company.write_time(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
        company.changed()
    second = sync_stream(connection=crm, stream="companies")
    assert second.status == "succeeded", second.error
    assert Client.objects.get(source=crm, external_id=edited.id).name == "Edited after the tie"


def test_a_search_that_ignores_its_filters_fails_the_run_instead_of_succeeding(
    connections: dict[str, Connection], simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.connectors.services import sync_stream

    monkeypatch.setattr(hubspot_streams, "SEARCH_PAGE", 7)
    monkeypatch.setattr(sim_hubspot, "_predicate", lambda flt: lambda company: True)
    run = sync_stream(connection=connections["crm"], stream="companies", full=True)
    assert run.status == "failed"
    assert "does not move past" in run.error


# ---- the search endpoints' own rate limit ----------------------------------------------------------------


def test_the_search_budget_is_hubspots_per_second_search_limit_shared_per_account() -> None:
    from apps.connectors.kinds.base import ConfigurationError
    from apps.connectors.kinds.hubspot.streams import search_budget

    connection = Connection(slug="crm", kind="hubspot", base_url="https://api.hubapi.com", options={})
    budget = search_budget(HubSpot(connection))
    assert budget is not None
    assert (budget.key, budget.calls, budget.window_ms) == (
        "fulcrum:rate:hubspot-search:api.hubapi.com",
        4,
        1000,
    )
    connection.options = {"search_rate_budget": {"calls": 2, "seconds": 1}}
    assert search_budget(HubSpot(connection)).calls == 2  # type: ignore[union-attr]
    connection.options = {"search_rate_budget": False}
    assert search_budget(HubSpot(connection)) is None
    connection.options = {"search_rate_budget": {"calls": "x"}}
    with pytest.raises(ConfigurationError, match="search_rate_budget"):
        search_budget(HubSpot(connection))


def test_every_search_waits_on_the_search_budget_and_the_wait_is_counted(
    page_size: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    page_size(3)
    waits: list[int] = []

    def budget() -> float:
        waits.append(1)
        return 0.25

    monkeypatch.setattr(hubspot_streams, "search_budget", lambda kind: budget)
    company = world([(2, 1), (6, 5), (2, 9)])
    state = SimState(company, dict(DEFAULT_TOKENS))
    client = InProcess(state)
    list(Companies(kind()).pages(client, {}, True))  # type: ignore[arg-type]
    assert len(waits) == len(client.bodies) > 3
    assert client.stats.rate_limited_seconds == pytest.approx(0.25 * len(waits))
