"""Coalescing (issues 3 §10, 4 §5): a burst of changes to one subject is evaluated once, and nothing is lost.

Marks are rows of ``PendingEvaluation`` written in the change's own transaction; a flush claims them for a
lease with SKIP LOCKED, evaluates, and deletes the rows it still holds. Redis only keeps one flush per window
queued.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from apps.entities.models import Project
from apps.orchestration import pipeline, tasks
from apps.rules.evaluation import triggers
from apps.rules.evaluation.services import rules_import
from apps.rules.evaluation.triggers import on_entities_changed
from apps.rules.models import Decision, PendingEvaluation
from tests.concurrency import run_concurrently
from tests.factories import ChangeOrderFactory, ProjectFactory

from .test_services import fresh_streams, risky_change_order, rule_yaml


def pending_flush(**kwargs: Any) -> dict[str, int]:
    """The flush with the pipeline's evaluation, looked up at call time (the tests replace it)."""
    return triggers.pending_flush(evaluate=lambda **kw: pipeline.evaluate_subjects(**kw), **kwargs)


@pytest.mark.django_db
def test_a_burst_of_changes_to_one_project_is_evaluated_once(
    scheduled_flushes: list[float], django_capture_on_commit_callbacks: Any
) -> None:
    rules_import(text=rule_yaml(), actor="system:test")
    fresh_streams()
    co = risky_change_order()
    sibling = ChangeOrderFactory(project=co.project)

    for _ in range(5):  # five webhook deliveries about the same project, each its own transaction
        with django_capture_on_commit_callbacks(execute=True):
            on_entities_changed({"project": {co.project_id}}, trigger="webhook")

    assert scheduled_flushes == [settings.FULCRUM["EVALUATION_COALESCE_SECONDS"]]  # one flush for the burst
    waiting = set(PendingEvaluation.objects.values_list("subject_type", "subject_id", "trigger"))
    assert ("change_order", co.pk, "webhook") in waiting and (
        "change_order",
        sibling.pk,
        "webhook",
    ) in waiting

    assert pending_flush()["change_order"] == 2
    decisions = Decision.objects.filter(subject_type="change_order")
    assert sorted(decisions.values_list("subject_id", flat=True)) == sorted([co.pk, sibling.pk])
    assert set(decisions.values_list("trigger", flat=True)) == {"webhook"}
    assert decisions.get(subject_id=co.pk).outcome == Decision.Verdict.MATCHED
    assert not PendingEvaluation.objects.exists()
    assert pending_flush() == {}


@pytest.mark.django_db
def test_a_started_flush_lets_later_changes_schedule_the_next_one(scheduled_flushes: list[float]) -> None:
    project = ProjectFactory()
    on_entities_changed({"project": {project.pk}})
    triggers.flush_soon()
    assert len(scheduled_flushes) == 1

    tasks.evaluate_pending()  # clears the guard first: marks arriving during it need another flush
    triggers.flush_soon()
    assert len(scheduled_flushes) == 2


@pytest.mark.django_db
def test_a_lost_flush_holds_back_the_next_one_for_a_few_seconds_only(scheduled_flushes: list[float]) -> None:
    # A worker SIGKILLed while holding the scheduled flush's countdown message loses it (Redis gives it back
    # after its visibility timeout): the guard's expiry is what lets the next change schedule another.
    window = float(settings.FULCRUM["EVALUATION_COALESCE_SECONDS"])
    triggers.flush_soon()
    ttl = triggers._redis().pttl(triggers._FLUSH_KEY) / 1000
    assert window < ttl <= 2 * window + triggers.FLUSH_GUARD_GRACE
    triggers.flush_soon()  # while the guard lives: no second task
    assert len(scheduled_flushes) == 1
    triggers._redis().delete(triggers._FLUSH_KEY)  # the guard expires (the lost task never cleared it)
    triggers.flush_soon()
    assert len(scheduled_flushes) == 2


def test_a_change_that_waited_its_window_before_it_was_stored_is_flushed_at_once(
    scheduled_flushes: list[float],
) -> None:
    # A webhook held up by the vendor (a 5xx burst, a 429 window) reaches the database seconds after it
    # arrived: its coalescing window, counted from its arrival, is over, so a flush runs now rather than a
    # window later (the one already scheduled by a fresher change may be a whole window away).
    window = float(settings.FULCRUM["EVALUATION_COALESCE_SECONDS"])
    triggers.flush_soon()  # a fresh change: the flush a window away, and its guard
    long_ago = timezone.now() - dt.timedelta(seconds=window + 3)
    triggers.flush_soon(since=long_ago)
    triggers.flush_soon(since=long_ago)  # a second at the same moment: the flush just queued takes it
    assert scheduled_flushes == [window, 0.0]
    triggers.flush_scheduled_clear()  # the scheduled flush starts: the next change schedules the next one
    triggers.flush_soon(since=long_ago)
    triggers.flush_soon(since=long_ago)  # ... but the quarter-window limit on immediate ones still holds
    assert scheduled_flushes == [window, 0.0, 0.0]


def test_a_change_that_arrived_part_of_a_window_ago_waits_only_the_rest(
    scheduled_flushes: list[float],
) -> None:
    window = float(settings.FULCRUM["EVALUATION_COALESCE_SECONDS"])
    triggers.flush_soon(since=timezone.now() - dt.timedelta(seconds=window / 4))
    assert len(scheduled_flushes) == 1 and 0 < scheduled_flushes[0] <= window * 3 / 4
    triggers.flush_soon(since=timezone.now() - dt.timedelta(seconds=window / 4))  # the guard holds it
    triggers.flush_soon(
        since=timezone.now() + dt.timedelta(seconds=60)
    )  # a clock ahead: never past the window
    assert len(scheduled_flushes) == 1
    triggers.flush_scheduled_clear()
    triggers.flush_soon(since=timezone.now() + dt.timedelta(seconds=60))
    assert scheduled_flushes[1] == window


@pytest.mark.django_db
def test_marking_passes_the_changes_arrival_to_the_flush(
    scheduled_flushes: list[float], django_capture_on_commit_callbacks: Any
) -> None:
    project = ProjectFactory()
    with django_capture_on_commit_callbacks(execute=True):
        on_entities_changed(
            {"project": {project.pk}}, trigger="webhook", since=timezone.now() - dt.timedelta(hours=1)
        )
    assert scheduled_flushes == [0.0]


@pytest.mark.django_db
def test_marking_a_subject_that_already_waits_still_makes_sure_a_flush_follows(
    scheduled_flushes: list[float], django_capture_on_commit_callbacks: Any
) -> None:
    project = ProjectFactory()
    with django_capture_on_commit_callbacks(execute=True):
        on_entities_changed({"project": {project.pk}})
    triggers.flush_scheduled_clear()  # a flush starts; it may skip the row the next change holds locked
    with django_capture_on_commit_callbacks(execute=True):
        on_entities_changed({"project": {project.pk}}, trigger="webhook")
    assert len(scheduled_flushes) == 2
    assert PendingEvaluation.objects.filter(subject_type="project").count() == 1


@pytest.mark.django_db
def test_without_redis_every_change_queues_a_flush(
    scheduled_flushes: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Down:
        def set(self, *args: Any, **kwargs: Any) -> None:
            raise RedisConnectionError("redis is down")

        delete = set

    monkeypatch.setattr(triggers, "_redis", lambda: Down())
    triggers.flush_soon()
    triggers.flush_soon()
    triggers.flush_scheduled_clear()  # a flush starting without Redis carries on
    assert len(scheduled_flushes) == 2


@pytest.mark.django_db
def test_a_failing_group_is_tried_again_later_and_the_others_go_on(
    scheduled_flushes: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = ProjectFactory()
    on_entities_changed({"project": {project.pk}})  # marks the project and its client
    evaluated: list[str] = []

    def evaluate(*, subject_type: str, ids: list[int], trigger: str) -> None:
        if subject_type == "project":
            raise RuntimeError("a rule that cannot be evaluated on this project")
        evaluated.append(subject_type)

    monkeypatch.setattr(pipeline, "evaluate_subjects", evaluate)
    assert pending_flush() == {"client": 1}  # no exception: the client went on, the project waits
    row = PendingEvaluation.objects.get()
    assert (row.subject_type, row.claim, row.attempts) == ("project", None, 1)
    assert row.claimed_until > timezone.now() + dt.timedelta(seconds=50)  # backs off a minute
    assert pending_flush() == {}  # not before its time

    PendingEvaluation.objects.update(claimed_until=timezone.now() - dt.timedelta(seconds=1))
    assert pending_flush() == {}
    row.refresh_from_db()
    assert row.attempts == 2 and row.claimed_until > timezone.now() + dt.timedelta(seconds=110)  # then two

    monkeypatch.undo()
    PendingEvaluation.objects.update(claimed_until=timezone.now() - dt.timedelta(seconds=1))
    assert pending_flush() == {"project": 1}
    assert evaluated == ["client"] and not PendingEvaluation.objects.exists()


@pytest.mark.django_db
def test_a_stopping_worker_frees_what_its_flush_still_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    ProjectFactory()
    on_entities_changed({"project": set(Project.objects.values_list("pk", flat=True))})

    def stop(**kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "evaluate_subjects", stop)
    with pytest.raises(KeyboardInterrupt):
        pending_flush()
    assert set(PendingEvaluation.objects.values_list("claim", "claimed_until", "attempts")) == {
        (None, None, 0)
    }


@pytest.mark.django_db
def test_a_subject_marked_again_while_it_is_evaluated_stays_queued(
    scheduled_flushes: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = ProjectFactory()
    on_entities_changed({"project": {project.pk}})
    evaluated: list[list[int]] = []

    def evaluate(*, subject_type: str, ids: list[int], trigger: str) -> None:
        if subject_type != "project":
            return
        evaluated.append(ids)
        if len(evaluated) == 1:  # a webhook about the project lands mid-evaluation
            on_entities_changed({"project": {project.pk}}, trigger="webhook")

    monkeypatch.setattr(pipeline, "evaluate_subjects", evaluate)
    pending_flush()
    row = PendingEvaluation.objects.get(subject_type="project", subject_id=project.pk)
    assert (row.claim, row.trigger) == (None, "webhook")  # released, not deleted; the latest trigger

    pending_flush()
    assert evaluated == [[project.pk], [project.pk]] and not PendingEvaluation.objects.exists()


@pytest.mark.django_db
def test_a_dead_workers_claim_is_taken_again_when_its_lease_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    project = ProjectFactory()
    held = timezone.now() + dt.timedelta(minutes=5)
    PendingEvaluation.objects.create(
        subject_type="project",
        subject_id=project.pk,
        trigger="sync",
        queued_at=timezone.now(),
        claim=uuid.uuid4(),
        claimed_until=held,
    )
    evaluated: list[int] = []
    monkeypatch.setattr(pipeline, "evaluate_subjects", lambda **kw: evaluated.extend(kw["ids"]))

    assert pending_flush() == {}  # another worker holds it
    PendingEvaluation.objects.update(claimed_until=timezone.now() - dt.timedelta(seconds=1))
    assert pending_flush() == {"project": 1} and evaluated == [project.pk]


@pytest.mark.django_db
def test_a_claim_lasts_a_minute_and_its_group_not_fifteen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.rules.evaluation.triggers import claim_lease

    projects = [ProjectFactory() for _ in range(3)]
    PendingEvaluation.objects.bulk_create(
        PendingEvaluation(subject_type="project", subject_id=p.pk, trigger="sync", queued_at=timezone.now())
        for p in projects
    )
    leases: list[dt.timedelta] = []

    def evaluate(**kw: Any) -> None:  # the worker is killed here: its claim is what is left
        row = PendingEvaluation.objects.first()
        assert row is not None and row.claimed_until is not None
        leases.append(row.claimed_until - timezone.now())
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "evaluate_subjects", evaluate)
    with pytest.raises(KeyboardInterrupt):
        pending_flush()
    [lease] = leases
    assert dt.timedelta(seconds=55) < lease <= claim_lease(3) < dt.timedelta(minutes=2)
    assert claim_lease(5_000) < dt.timedelta(minutes=2)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_flushes_never_evaluate_one_subject_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    PendingEvaluation.objects.bulk_create(
        PendingEvaluation(subject_type="project", subject_id=i, trigger="sync", queued_at="2026-11-24T00:00Z")
        for i in range(1, 401)
    )
    seen: list[int] = []
    lock = threading.Lock()

    def record(*, subject_type: str, ids: list[int], trigger: str) -> None:
        time.sleep(0.05)  # hold the claim while the other flush looks
        with lock:
            seen.extend(ids)

    monkeypatch.setattr(pipeline, "evaluate_subjects", record)
    errors = run_concurrently(lambda: pending_flush(limit=50), threads=2)
    assert errors == []
    assert sorted(seen) == list(range(1, 401))  # every subject once: none skipped, none twice
    assert not PendingEvaluation.objects.exists()


@pytest.mark.django_db
def test_marks_stay_out_of_the_claim_index_and_a_flush_finds_its_rows_through_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Marks are written unclaimed: the claim index holds claimed rows only (a sync marking 157k subjects
    # paid an insert of NULL for each), and the flush's lookups of its own rows still go through it.
    monkeypatch.setattr(triggers, "flush_soon", lambda **_: None)
    triggers.pending_add({"change_order": set(range(1, 3001))}, "sync")
    claim = uuid.uuid4()
    params = {"claim": claim, "lease": dt.timedelta(minutes=1), "limit": 5}
    assert len(triggers._run(triggers._CLAIM, params, fetch=True)) == 5
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rules_pendingevaluation")
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'pending_claimed'")
        assert cursor.fetchone()[0].endswith("WHERE (claim IS NOT NULL)")
        cursor.execute("EXPLAIN " + triggers._RENEW, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "pending_claimed" in plan, plan


@pytest.mark.django_db
def test_a_waiting_subject_marked_again_alike_is_not_rewritten(monkeypatch: pytest.MonkeyPatch) -> None:
    # Marking what already waits, with the same trigger and no claim, changes nothing: the row keeps its
    # version (its ctid), so a sync's connections and a webhook burst re-marking the same subjects write
    # no new versions. A new trigger, or a flush's claim to release, still rewrites it; a failed
    # subject's retry time is kept either way.
    monkeypatch.setattr(triggers, "flush_soon", lambda **_: None)
    retry_at = timezone.now() + dt.timedelta(minutes=4)
    PendingEvaluation.objects.create(
        subject_type="project", subject_id=1, trigger="sync", queued_at=timezone.now(), attempts=2,
        claimed_until=retry_at,
    )  # fmt: skip
    PendingEvaluation.objects.create(
        subject_type="project", subject_id=2, trigger="sync", queued_at=timezone.now(), attempts=0,
        claim=uuid.uuid4(), claimed_until=timezone.now() + dt.timedelta(minutes=1),
    )  # fmt: skip
    triggers.pending_add({"project": {3}}, "sync")

    def versions() -> dict[int, tuple[str, str, uuid.UUID | None, dt.datetime | None]]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT subject_id, ctid::text, trigger, claim, claimed_until FROM rules_pendingevaluation"
            )
            return {row[0]: row[1:] for row in cursor.fetchall()}

    before = versions()
    triggers.pending_add({"project": {1, 2, 3}}, "sync")
    after = versions()
    assert after[1] == before[1] and after[3] == before[3]  # unchanged: not rewritten
    assert after[2][0] != before[2][0] and after[2][2:] == (None, None)  # released from its claim

    triggers.pending_add({"project": {1, 3}}, "webhook")
    latest = versions()
    assert {latest[1][1], latest[3][1]} == {"webhook"} and latest[1][0] != after[1][0]
    assert latest[1][3] == retry_at  # the failed subject still waits for its retry time
