"""Reading the next page while one is stored: order, one page ahead at most, errors where serial reading
raises them, no database from the read-ahead thread, and the sync's guarantees kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import apps.connectors.kinds.procore.streams as procore_streams
import apps.connectors.services as services
from apps.connectors.http import HttpClient, Prefetch, UpstreamError, UpstreamTransient
from apps.connectors.models import Connection, StreamState, SyncRun
from apps.connectors.services import sync_connection
from apps.entities.models import ChangeOrder
from apps.simulator import Company, SimulatorServer

CHANGE_ORDERS = "/rest/v1.0/change_order_packages"  # listed per project (?project_id=)


def first_page_projects(company: Company, per_page: int) -> tuple[int, int]:
    """(projects read, change orders held) when the first page of ``per_page`` change orders is full: the
    connector reads projects in id order and yields a page once it holds that many records."""
    held = 0
    for read, project in enumerate(sorted(company.pc_projects), 1):
        held += sum(1 for c in company.pc_change_orders.values() if c.project_id == project)
        if held >= per_page:
            return read, held
    raise AssertionError("fewer change orders than a page")


def _wait_until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def test_items_arrive_in_order_and_never_more_than_one_ahead() -> None:
    produced: list[int] = []

    def pages() -> Iterator[int]:
        for n in range(5):
            produced.append(n)
            yield n

    taken = []
    with Prefetch(pages()) as ahead:
        for item in ahead:
            taken.append(item)
            # The next item is read while this one is "stored", and no further.
            ahead_by_one = min(item + 2, 5)
            assert _wait_until(lambda n=ahead_by_one: len(produced) == n, timeout=2)  # type: ignore[misc]
            time.sleep(0.05)
            assert len(produced) == ahead_by_one

    assert taken == [0, 1, 2, 3, 4]


def test_an_error_reading_ahead_is_raised_only_after_the_items_before_it() -> None:
    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise UpstreamTransient("GET /x: HTTP 503 after 4 attempts", status=503)

    taken = []
    with pytest.raises(UpstreamError, match="503"), Prefetch(pages()) as ahead:
        for item in ahead:
            taken.append(item)

    assert taken == [1, 2]


@pytest.mark.django_db
def test_the_read_ahead_thread_cannot_use_the_database() -> None:
    def pages() -> Iterator[int]:
        Connection.objects.count()
        yield 1

    with pytest.raises(RuntimeError, match="must not use the database"), Prefetch(pages()) as ahead:
        list(ahead)


def test_a_token_refresh_needed_while_reading_ahead_runs_on_the_callers_thread() -> None:
    ran_on = []

    def reauthorize(rejected: Any) -> dict[str, str]:
        ran_on.append(threading.get_ident())
        return {"Authorization": "Bearer fresh"}

    client = HttpClient("http://127.0.0.1:9/", reauthorize=reauthorize, sleep=lambda s: None)

    def pages() -> Iterator[str]:
        assert client.reauthorize is not None
        yield client.reauthorize({})["Authorization"]

    with Prefetch(pages(), client) as ahead:
        assert list(ahead) == ["Bearer fresh"]

    assert ran_on == [threading.get_ident()]
    assert client.reauthorize is reauthorize  # put back once the thread is done


def test_closing_cuts_short_a_read_ahead_waiting_to_retry() -> None:
    waits: list[float] = []
    client = HttpClient("http://127.0.0.1:9/", max_retries=5)

    def pages() -> Iterator[int]:
        yield 1
        waits.append(60.0)
        client.sleep(60.0)  # a long backoff before the next attempt
        yield 2

    started = time.monotonic()
    with Prefetch(pages(), client) as ahead:
        assert next(ahead) == 1
        assert _wait_until(lambda: waits)
    assert time.monotonic() - started < 5


def test_a_failure_fetching_the_page_read_ahead_keeps_the_stored_page_and_its_cursor_and_ends_partial(
    connections: dict[str, Connection],
    company: Company,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(procore_streams, "PER_PAGE", 50)
    monkeypatch.setattr(procore_streams, "CONCURRENCY", 1)  # calls counted exactly, in order
    pm = connections["pm"]
    read, held = first_page_projects(company, 50)
    # Every project after those of the first page fails for good.
    simulator.faults.add("status", path_prefix=CHANGE_ORDERS, status=503, skip=read, count=None)
    requested = lambda: sum(CHANGE_ORDERS in path for _m, path in simulator.requests_log)  # noqa: E731
    store = services._store_page
    concurrent = []

    def storing(*args: Any, **kwargs: Any) -> list[int]:
        # Page 2 is requested (and fails for good) while page 1 is still being stored.
        concurrent.append(_wait_until(lambda: requested() >= read + 1))
        return store(*args, **kwargs)

    monkeypatch.setattr(services, "_store_page", storing)
    simulator.requests_log.clear()

    partial = sync_connection(connection=pm, streams=["change_orders"])[0]

    assert concurrent == [True]
    assert partial.status == SyncRun.Status.PARTIAL and "503 after 4 attempts" in partial.error
    assert partial.counts["pages"] == 1 and partial.counts["inserted"] == ChangeOrder.objects.count() == held
    listing = -(-len(company.pc_projects) // 50)  # the project list, 50 a page
    assert partial.counts["api_calls"] == listing + read + 4
    state = StreamState.objects.get(connection=pm, stream="change_orders")
    # The projects of the stored page have their cursor; the others start from the beginning next time.
    read_ids = sorted((p for p, at in procore_streams.project_cursor(state.cursor)[1].items() if at), key=int)
    assert read_ids == [str(p) for p in sorted(company.pc_projects)[:read]]
    assert state.last_success_at is None

    simulator.faults.clear()
    resumed = sync_connection(connection=pm, streams=["change_orders"])[0]

    assert resumed.status == SyncRun.Status.SUCCEEDED
    assert ChangeOrder.objects.count() == len(company.pc_change_orders)  # nothing skipped


def test_a_page_that_cannot_be_stored_stops_the_read_ahead_and_fails_the_run(
    connections: dict[str, Connection],
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    monkeypatch.setattr(procore_streams, "PER_PAGE", 50)
    monkeypatch.setattr(procore_streams, "CONCURRENCY", 1)  # calls counted exactly, in order
    settings.FULCRUM = {**settings.FULCRUM, "HTTP_BACKOFF_BASE": 30.0, "HTTP_BACKOFF_CAP": 30.0}
    read, _held = first_page_projects(simulator.company, 50)
    simulator.faults.add("status", path_prefix=CHANGE_ORDERS, status=503, skip=read, count=None)
    requested = lambda: sum(CHANGE_ORDERS in path for _m, path in simulator.requests_log)  # noqa: E731

    def broken(*args: Any, **kwargs: Any) -> list[int]:
        _wait_until(lambda: requested() >= read + 1)  # the read-ahead is now in its (long) backoff
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "_store_page", broken)
    simulator.requests_log.clear()
    started = time.monotonic()

    with pytest.raises(RuntimeError, match="disk full"):
        sync_connection(connection=connections["pm"], streams=["change_orders"])

    assert time.monotonic() - started < 10  # the backoff was cut short, not waited out
    run = SyncRun.objects.get(stream="change_orders")
    assert run.status == SyncRun.Status.FAILED and "disk full" in run.error
    assert ChangeOrder.objects.count() == 0


def _sync_threads() -> list[threading.Thread]:
    """The sync's own threads still alive: the read-ahead and Procore's project readers."""
    return [
        t
        for t in threading.enumerate()
        if t.is_alive() and t.name.startswith(("sync-prefetch", "procore-projects"))
    ]


def test_a_caller_that_stops_early_closes_the_producer_and_leaves_no_thread() -> None:
    started = threading.Event()
    cleaned_up = []

    def pages() -> Iterator[int]:
        try:
            yield 1
            started.set()
            yield 2  # read ahead, never taken
            yield 3
        finally:
            cleaned_up.append(threading.get_ident())  # a pager's own threads are shut down here

    producer = pages()  # held here too: only closing it, not the garbage collector, runs its clean-up
    with pytest.raises(RuntimeError, match="store failed"), Prefetch(producer) as ahead:
        assert next(ahead) == 1
        assert started.wait(2)
        raise RuntimeError("store failed")

    assert cleaned_up == [threading.get_ident()]  # at once, on the caller's thread, once the reader stopped
    assert not ahead._thread.is_alive()
    assert _sync_threads() == []


def test_an_error_reading_ahead_leaves_no_thread_running() -> None:
    def pages() -> Iterator[int]:
        yield 1
        raise UpstreamTransient("GET /x: HTTP 503 after 4 attempts", status=503)

    ahead = Prefetch(pages())
    with pytest.raises(UpstreamError), ahead:
        for _ in ahead:
            pass

    assert not ahead._thread.is_alive()
    assert _sync_threads() == []


def test_no_sync_thread_outlives_a_run_that_succeeds_fails_upstream_or_fails_storing(
    connections: dict[str, Connection],
    company: Company,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(procore_streams, "PER_PAGE", 50)  # several pages, several project reads at once
    pm = connections["pm"]

    done = sync_connection(connection=pm, streams=["change_orders"])[0]
    assert done.status == SyncRun.Status.SUCCEEDED and done.counts["pages"] > 1
    assert _sync_threads() == []

    read, _held = first_page_projects(company, 50)
    simulator.faults.add("status", path_prefix=CHANGE_ORDERS, status=503, skip=read, count=None)
    partial = sync_connection(connection=pm, streams=["change_orders"], full=True)[0]
    assert partial.status == SyncRun.Status.PARTIAL
    assert _sync_threads() == []

    simulator.faults.clear()
    monkeypatch.setattr(
        services, "_store_page", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full"))
    )
    with pytest.raises(RuntimeError, match="disk full"):
        sync_connection(connection=pm, streams=["change_orders"], full=True)
    assert _sync_threads() == []
