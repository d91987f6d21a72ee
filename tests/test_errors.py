"""The one backoff (``apps/errors.py``): full jitter within bounds, capped, longer upstream advice wins."""

from __future__ import annotations

from typing import Any

import pytest

from apps.errors import Permanent, Transient, backoff, configured_backoff, decorrelated_backoff


def test_waits_are_jittered_between_zero_and_base_times_two_to_the_retry() -> None:
    for retry, ceiling in ((0, 1.0), (1, 2.0), (3, 8.0)):
        waits = [backoff(retry, base=1.0, cap=30.0) for _ in range(200)]
        assert all(0.0 <= w <= ceiling for w in waits)
        # Full jitter: the whole range is used, not only its upper half.
        assert min(waits) < ceiling / 4 and max(waits) > ceiling * 3 / 4


def test_the_cap_bounds_every_wait() -> None:
    waits = [backoff(40, base=1.0, cap=30.0) for _ in range(200)]
    assert all(0.0 <= w <= 30.0 for w in waits) and max(waits) > 20.0


def test_a_longer_retry_after_wins_and_a_shorter_one_is_a_floor() -> None:
    assert backoff(0, base=1.0, cap=30.0, retry_after=7.0) == 7.0
    assert all(backoff(10, base=1.0, cap=30.0, retry_after=0.5) >= 0.5 for _ in range(50))
    assert backoff(0, base=1.0, cap=30.0, retry_after=10_000.0, longest=300.0) == 300.0
    assert backoff(0, base=1.0, cap=30.0, retry_after=10_000.0) == 10_000.0  # no longest: waited in full


def test_each_layer_reads_its_own_settings(settings: Any) -> None:
    settings.FULCRUM = {
        **settings.FULCRUM,
        "ACTION_BACKOFF_BASE": 100.0,
        "ACTION_BACKOFF_CAP": 150.0,
        "WEBHOOK_BACKOFF_BASE": 0.001,
        "WEBHOOK_BACKOFF_CAP": 0.002,
    }
    assert all(0.0 <= configured_backoff("WEBHOOK", 5) <= 0.002 for _ in range(50))
    assert max(configured_backoff("ACTION", 5) for _ in range(200)) > 100.0  # base 100, capped at 150
    assert all(configured_backoff("ACTION", 5) <= 150.0 for _ in range(50))


def test_decorrelated_waits_stay_between_the_base_and_three_times_the_last_one() -> None:
    first = [decorrelated_backoff(None, base=0.1, cap=30.0) for _ in range(200)]
    assert all(0.1 <= w <= 0.3 for w in first)  # never an immediate retry
    assert min(first) < 0.15 and max(first) > 0.25  # jittered over the whole range
    for previous in (0.1, 0.25, 2.0):
        waits = [decorrelated_backoff(previous, base=0.1, cap=30.0) for _ in range(200)]
        assert all(0.1 <= w <= 3 * previous for w in waits)


def test_decorrelated_waits_grow_and_the_cap_bounds_them() -> None:
    chains = []
    for _ in range(200):
        wait, chain = None, []
        for _ in range(12):
            wait = decorrelated_backoff(wait, base=0.1, cap=5.0)
            chain.append(wait)
        chains.append(chain)
    assert all(0.1 <= w <= 5.0 for chain in chains for w in chain)
    means = [sum(chain[i] for chain in chains) / len(chains) for i in range(12)]
    assert means[0] < means[2] < means[5] <= 5.0  # increasing on average, up to the cap
    assert max(chain[-1] for chain in chains) > 4.0  # the cap is reached
    assert decorrelated_backoff(100.0, base=10.0, cap=5.0) == 5.0  # a base above the cap: the cap


def test_a_longer_retry_after_wins_over_a_decorrelated_wait() -> None:
    assert decorrelated_backoff(None, base=0.1, cap=30.0, retry_after=7.0) == 7.0
    assert all(decorrelated_backoff(1.0, base=0.1, cap=30.0, retry_after=0.05) >= 0.1 for _ in range(50))
    assert decorrelated_backoff(None, base=0.1, cap=30.0, retry_after=10_000.0, longest=300.0) == 300.0


def test_the_vocabulary_carries_the_upstream_advice() -> None:
    error = Transient("HTTP 503", retry_after=4.0, outcome_unknown=True)
    assert error.retry_after == 4.0 and error.outcome_unknown and str(error) == "HTTP 503"
    assert Transient("x").retry_after is None and not Transient("x").outcome_unknown
    with pytest.raises(Permanent):
        raise Permanent("HTTP 403")
    assert not issubclass(Permanent, Transient) and not issubclass(Transient, Permanent)
