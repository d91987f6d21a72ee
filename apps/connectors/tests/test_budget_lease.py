"""The shared rate budget reserving several calls per Redis round trip (a lease), on a real Redis: the
budget's meaning stays exact (at most ``calls`` calls per window by everyone sharing the key), reserved
calls never outlive the window they were counted in, unspent ones go back to that window only, and a hold
drops them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest

from apps.connectors.ratelimit import LEASE_SHARE, RateBudget, redis_client, redis_url


class Spent(Exception):
    """Raised by a test's ``sleep``: the budget asked its caller to wait."""


def _refuse(seconds: float) -> None:
    raise Spent(seconds)


def _sleeper(slept: list[float]) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    return sleep


def _counter(budget: RateBudget) -> int:
    return int(redis_client(redis_url()).get(budget.key) or 0)


def test_a_lease_reserves_several_calls_per_round_trip() -> None:
    budget = RateBudget(f"test:{uuid.uuid4()}", 1000, 60, lease=16)

    assert [budget.wait() for _ in range(32)] == [0.0] * 32

    assert budget.round_trips == 2 and _counter(budget) == 32


def test_a_small_budget_is_not_leased() -> None:
    budget = RateBudget(f"test:{uuid.uuid4()}", LEASE_SHARE * 2 - 1, 60, lease=16)

    budget.wait()
    budget.wait()

    assert budget.lease == 1 and budget.round_trips == 2 and _counter(budget) == 2


def test_threads_and_processes_sharing_a_leased_budget_never_pass_it() -> None:
    key = f"test:{uuid.uuid4()}"
    limit = 400  # leases of 8: 400 // 50
    instances = [RateBudget(key, limit, 60, sleep=_refuse, lease=8) for _ in range(2)]  # two "workers"
    granted = [0] * 8
    refused = [0] * 8

    def spend(slot: int) -> None:
        budget = instances[slot % 2]
        while True:
            try:
                budget.wait()
            except Spent:
                refused[slot] += 1
                return
            granted[slot] += 1

    threads = [threading.Thread(target=spend, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # Every thread stopped at a refusal, so no reserved call is left unspent: all of the budget, no more.
    assert sum(granted) == limit and all(refused)
    assert _counter(instances[0]) == limit
    assert [budget.release() for budget in instances] == [0, 0]


def test_reserved_calls_lapse_with_their_window() -> None:
    key = f"test:{uuid.uuid4()}"
    slept: list[float] = []
    # A window long enough for 200 round trips to Redis on a busy machine.
    first = RateBudget(key, 200, 1.0, lease=4, sleep=_sleeper(slept))
    other = RateBudget(key, 200, 1.0, sleep=_refuse)

    first.wait()  # reserves 4 calls, spends one
    time.sleep(1.05)  # that window is over; its 3 unspent calls with it
    spent = 0
    with pytest.raises(Spent):
        while True:
            other.wait()
            spent += 1

    assert spent == 200  # the new window is whole: nothing of the old lease was counted in it
    assert first.wait() > 0 and slept  # and the old lease is not spent in it either: first waits


def test_unspent_calls_go_back_to_their_own_window_only() -> None:
    key = f"test:{uuid.uuid4()}"
    leased = RateBudget(key, 400, 60, lease=8)
    leased.wait()
    assert _counter(leased) == 8

    assert leased.release() == 7
    assert _counter(leased) == 1 and leased.release() == 0  # nothing left to give


def test_a_release_never_reaches_a_later_window() -> None:
    key = f"test:{uuid.uuid4()}"
    leased = RateBudget(key, 200, 1.0, lease=4)
    leased.wait()
    time.sleep(1.05)
    later = RateBudget(key, 200, 1.0, lease=4)
    later.wait()  # a new window: 4 reserved in it
    leased._expires = time.monotonic() + 60  # as if this process's clock lagged: Redis still refuses

    assert leased.release() == 0
    assert _counter(later) == 4


def test_a_hold_drops_the_lease_and_is_waited_out() -> None:
    key = f"test:{uuid.uuid4()}"
    slept: list[float] = []
    budget = RateBudget(key, 400, 60, lease=8, sleep=_sleeper(slept))
    budget.wait()

    budget.hold(0.2)  # the vendor said its limit is spent

    assert _counter(budget) == 1  # the 7 unspent calls went back
    assert budget.wait() > 0 and 0 < sum(slept) <= 0.25
