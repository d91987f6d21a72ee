"""Procore's project windows read several at a time (options.concurrency): handed to the writer in project
order, no more than the pool in flight, an error of one project raised where a serial read raises it, and
the shared rate budget never passed with several calls under way (a real Redis)."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import pytest

import apps.connectors.kinds.procore.streams as procore_streams
from apps.connectors.http import UpstreamError
from apps.connectors.kinds import get_kind
from apps.connectors.kinds.procore.streams import _in_order
from apps.connectors.models import Connection, StreamState, SyncRun
from apps.connectors.ratelimit import RateBudget, redis_client, redis_url
from apps.connectors.services import sync_connection
from apps.entities.models import ChangeOrder
from apps.simulator import Company, SimulatorServer

CHANGE_ORDERS = "/rest/v1.0/change_order_packages"


def test_reads_come_back_in_project_order_with_the_pool_bounded() -> None:
    projects = [str(n) for n in range(60)]
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    def read(pid: str) -> list[dict[str, Any]]:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(random.uniform(0, 0.01))  # finish out of order
        with lock:
            running[0] -= 1
        return [{"id": pid}]

    out = list(_in_order(read, projects, 4))

    assert [pid for pid, _ in out] == projects and [(r or [{}])[0].get("id") for _, r in out] == projects
    assert 1 < running[1] <= 4


def test_an_error_of_one_project_is_raised_after_every_project_before_it() -> None:
    projects = [str(n) for n in range(40)]

    def read(pid: str) -> list[dict[str, Any]]:
        if pid == "17":
            raise UpstreamError("GET projects/17: HTTP 403", status=403)
        time.sleep(random.uniform(0, 0.005))  # later projects finish first
        return [{"id": pid}]

    handed: list[str] = []
    with pytest.raises(UpstreamError, match="17"):
        for pid, _records in _in_order(read, projects, 4):
            handed.append(pid)

    assert handed == projects[:17]


def test_a_failing_project_stops_the_stream_at_the_projects_before_it(
    connections: dict[str, Connection],
    simulator: SimulatorServer,
    company: Company,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(procore_streams, "PER_PAGE", 1)  # a page per project: each committed with its cursor
    pm = connections["pm"]
    pm.options = {**pm.options, "concurrency": 4}
    pm.save()
    sync_connection(connection=pm, streams=["projects"])
    order = sorted(company.pc_projects)
    with_orders = sorted({c.project_id for c in company.pc_change_orders.values()}, key=order.index)
    failing = with_orders[len(with_orders) // 2]
    simulator.faults.add("status", path_prefix=CHANGE_ORDERS, regex=f"project_id={failing}(&|$)", status=403)

    [run] = sync_connection(connection=pm, streams=["change_orders"])

    assert run.status == SyncRun.Status.FAILED and "403" in run.error
    before = {str(p) for p in order[: order.index(failing)]}
    stored = set(ChangeOrder.objects.values_list("project_ref", flat=True))
    assert stored == {str(p) for p in with_orders if str(p) in before}
    cursor = procore_streams.project_cursor(
        StreamState.objects.get(connection=pm, stream="change_orders").cursor
    )[1]
    read = {pid for pid, done in cursor.items() if done}
    assert read <= before and str(failing) not in read
    assert stored <= read


def test_several_calls_in_flight_never_pass_the_shared_budget(
    connections: dict[str, Connection], company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit, seconds = 100, 2.0  # leases of 2 (100 // 50); 184 calls: the limit binds
    pm = connections["pm"]
    pm.options = {
        **pm.options,
        "concurrency": 8,
        "rate_budget": {"calls": limit, "seconds": seconds},
        "rate_budget_lease": 16,
    }
    pm.save()
    granted: list[tuple[int, float, float]] = []  # (the window's end on the server, when, lease expiry)
    reserve = RateBudget._reserve

    def spy(self: RateBudget) -> int:
        wait = reserve(self)
        if wait == 0:
            granted.append((self._window_end, time.monotonic(), self._expires))
        return wait

    monkeypatch.setattr(RateBudget, "_reserve", spy)

    runs = sync_connection(connection=pm, streams=["projects", "milestones", "change_orders", "submittals"])

    assert all(run.status == SyncRun.Status.SUCCEEDED for run in runs)
    calls = sum(int(run.counts["api_calls"]) for run in runs)
    assert len(granted) == calls > limit  # every call went through the budget, over several windows
    assert sum(float(run.counts["rate_limited_seconds"]) for run in runs) > 0  # and it made them wait
    per_window: dict[int, int] = {}
    for window_end, when, expires in granted:
        per_window[window_end] = per_window.get(window_end, 0) + 1
        assert when < expires  # spent inside the window it was counted in
    assert len(per_window) >= 2 and max(per_window.values()) <= limit
    budget = get_kind(pm).rate_budget()
    assert isinstance(budget, RateBudget) and budget.lease == 2
    assert int(redis_client(redis_url()).get(budget.key) or 0) <= limit
    assert ChangeOrder.objects.count() == len(company.pc_change_orders)


def test_every_reader_keeps_its_connection(
    connections: dict[str, Connection],
    company: Company,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pm = connections["pm"]
    pm.options = {**pm.options, "concurrency": 16}  # more readers than requests' default pool of 10
    pm.save()

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        runs = sync_connection(connection=pm, streams=["projects", "change_orders"])

    assert [run.status for run in runs] == [SyncRun.Status.SUCCEEDED] * 2
    assert ChangeOrder.objects.count() == len(company.pc_change_orders)
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]  # none opened and dropped
