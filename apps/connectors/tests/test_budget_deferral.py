"""Issue 19: in a worker, a wait for the shared rate budget never sleeps in the slot; the task re-queues."""

from __future__ import annotations

import time
import uuid

import pytest

from apps.connectors import ratelimit
from apps.connectors.models import Connection, SyncRun
from apps.connectors.ratelimit import RateBudget, RateBudgetDeferred
from apps.connectors.tasks import sync_connection_task
from apps.errors import Transient


@pytest.fixture
def in_worker():
    ratelimit.take_deferral()
    with ratelimit.deferring():
        yield
    ratelimit.take_deferral()


def test_a_long_wait_raises_instead_of_sleeping(in_worker):
    slept: list[float] = []
    budget = RateBudget(f"test:{uuid.uuid4()}", 1, 60, sleep=slept.append)
    assert budget.wait() == 0
    with pytest.raises(RateBudgetDeferred) as caught:
        budget.wait()
    assert slept == [] and 59 < caught.value.retry_after <= 60 and isinstance(caught.value, Transient)
    assert 59 < ratelimit.take_deferral() <= 60 and ratelimit.take_deferral() == 0


def test_a_short_wait_is_still_slept(in_worker):
    slept: list[float] = []
    budget = RateBudget(f"test:{uuid.uuid4()}", 1, 0.3, sleep=lambda s: (slept.append(s), time.sleep(s)))  # type: ignore[func-returns-value]
    budget.wait()
    waited = budget.wait()  # slept, not deferred (no RateBudgetDeferred)
    # The first sleep is the window's remaining time (+1 ms: Redis's PTTL rounds down); when Redis has not
    # yet expired the key on waking, one more millisecond-sized sleep follows.
    assert 0 < slept[0] <= 0.3 and 0 < waited <= 0.3 + 0.005 * (len(slept) - 1) and len(slept) <= 3


def test_outside_deferring_the_wait_is_slept():
    slept: list[float] = []
    budget = RateBudget(f"test:{uuid.uuid4()}", 1, 60, sleep=slept.append)
    budget.wait()
    with pytest.raises(RuntimeError):
        # The fake sleep returns at once, so the loop asks again: stop it after the first sleep.
        budget.sleep = lambda s: (slept.append(s), (_ for _ in ()).throw(RuntimeError("slept")))
        budget.wait()
    assert slept and slept[0] > 59


@pytest.mark.django_db
def test_a_sync_out_of_budget_ends_partial_and_requeues_itself(
    connections: dict[str, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    import apps.connectors.kinds.procore.streams as procore_streams

    monkeypatch.setattr(procore_streams, "PER_PAGE", 10)
    pm = connections["pm"]
    pm.options = {**pm.options, "rate_budget": {"calls": 3, "seconds": 60}}
    pm.save()
    queued: list[tuple[tuple, int]] = []
    monkeypatch.setattr(
        sync_connection_task, "apply_async", lambda args, countdown: queued.append((args, countdown))
    )

    started = time.monotonic()
    summary = sync_connection_task.run(pm.pk)

    assert time.monotonic() - started < 20  # no 60-second sleep in the slot
    assert "re-queued in" in summary
    [(args, countdown)] = queued
    assert args == (pm.pk, False) and 50 < countdown <= 60
    runs = SyncRun.objects.filter(connection=pm)
    assert runs.filter(status=SyncRun.Status.PARTIAL).exists()
    assert all("rate budget" in r.error for r in runs.filter(status=SyncRun.Status.PARTIAL))


def test_deferring_restores_the_previous_mode():
    assert not ratelimit._defer
    with ratelimit.deferring():
        assert ratelimit._defer
    assert not ratelimit._defer
