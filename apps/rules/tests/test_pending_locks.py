"""Marks for evaluation never deadlock: one transaction's marks go in one statement, in one order.

Two webhook deliveries whose transactions each marked subjects in several inserts (a merge publishing its
own changes before the delivery's, say), in different orders, deadlocked on ``rules_pendingevaluation``:
each held a row the other was about to insert. A writer that publishes more than once in a transaction
collects its changes (``entities_changes_collected``) and the rules insert them once, ordered by subject
type and id. And the flush never waits on a row a marker holds, so it closes no cycle with one.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.entities.changes import entities_changed_publish, entities_changes_collected
from apps.rules.evaluation import triggers
from apps.rules.models import PendingEvaluation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits here schedule no flush on the broker."""
    monkeypatch.setattr(triggers, "flush_soon", lambda **_: None)


def _in_threads(*targets: Callable[[], None], timeout: float = 30) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_two_transactions_publishing_in_opposite_orders_do_not_deadlock() -> None:
    # A submittal's change marks just that submittal; a document with no project or change order, just
    # that document: two disjoint marks, published by the two transactions in opposite orders.
    submittal = {"submittal": {101}}
    document = {"document": {202}}
    halfway = threading.Barrier(2, timeout=10)

    def writer(first: dict[str, set[int]], second: dict[str, set[int]]) -> Callable[[], None]:
        def run() -> None:
            with transaction.atomic(), entities_changes_collected(trigger="webhook"):
                entities_changed_publish(first, trigger="webhook", link=False)
                halfway.wait()  # both hold their first marks (they did, as rows, before the fix)
                entities_changed_publish(second, trigger="resolution", link=False)

        return run

    errors = _in_threads(writer(submittal, document), writer(document, submittal))

    assert errors == []
    marks = set(PendingEvaluation.objects.values_list("subject_type", "subject_id", "trigger"))
    assert marks == {("submittal", 101, "webhook"), ("document", 202, "webhook")}


def test_a_failed_nested_scope_marks_nothing_of_its_own() -> None:
    """A batch's delivery whose savepoint rolls back leaves no mark for what it changed."""
    with transaction.atomic(), entities_changes_collected(trigger="webhook") as collected:
        entities_changed_publish({"submittal": {1}}, trigger="webhook", link=False)
        with pytest.raises(RuntimeError), transaction.atomic(), entities_changes_collected(trigger="webhook"):
            entities_changed_publish({"submittal": {2}}, trigger="webhook", link=False)
            raise RuntimeError("this delivery failed")
        with transaction.atomic(), entities_changes_collected(trigger="webhook"):
            entities_changed_publish({"document": {3}}, trigger="webhook", link=False)
        assert collected == {"submittal": {1}, "document": {3}}
        assert not PendingEvaluation.objects.exists()  # nothing inserted until the outer scope ends

    assert set(PendingEvaluation.objects.values_list("subject_type", "subject_id")) == {
        ("submittal", 1),
        ("document", 3),
    }


def test_renewing_a_claim_never_waits_on_a_marker() -> None:
    """A flush renewing its claim while a delivery re-marks one of its subjects: the renew used to wait on
    that row while holding the rows it had renewed, which the delivery could be about to mark."""
    claim, now = uuid.uuid4(), timezone.now()
    PendingEvaluation.objects.bulk_create(
        [
            PendingEvaluation(subject_type="change_order", subject_id=n, trigger="sync", queued_at=now)
            for n in (1, 2, 3)
        ]
    )
    PendingEvaluation.objects.update(claim=claim, claimed_until=now + dt.timedelta(seconds=1))
    marked, release = threading.Event(), threading.Event()

    def marker() -> None:
        try:
            with transaction.atomic():
                triggers.pending_add({"change_order": {2}}, "webhook")  # releases 2 from the claim, holds it
                marked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=marker)
    thread.start()
    try:
        assert marked.wait(10)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")
            params: dict[str, Any] = {"claim": claim, "lease": triggers.claim_lease(3)}
            triggers._run(triggers._RENEW, params)  # would raise LockNotAvailable had it waited
    finally:
        release.set()
        thread.join(10)

    renewed = PendingEvaluation.objects.filter(claim=claim, claimed_until__gt=now + dt.timedelta(seconds=30))
    assert sorted(renewed.values_list("subject_id", flat=True)) == [1, 3]
    assert PendingEvaluation.objects.get(subject_id=2).claim is None  # the marker took it back
