"""A worker (re)started after a crash queues the evaluation flush and the outbox sweep at once: the countdown
messages a SIGKILLed worker held (a scheduled flush, an outbox retry) come back from Redis only after its
visibility timeout."""

from __future__ import annotations

from typing import Any

import pytest
from celery.signals import worker_ready

from apps.entities.models import Project
from apps.escalations import tasks as escalation_tasks
from apps.orchestration import tasks
from apps.rules.evaluation.triggers import on_entities_changed
from apps.rules.models import PendingEvaluation
from tests.factories import ProjectFactory


@pytest.fixture
def countdowns(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float | None]]:
    sent: list[tuple[str, float | None]] = []
    for task in (tasks.evaluate_pending, escalation_tasks.deliver_due):
        monkeypatch.setattr(
            task, "apply_async", lambda *a, _name=task.name, **kw: sent.append((_name, kw.get("countdown")))
        )
    return sent


def test_a_started_worker_queues_the_flush_and_the_outbox_sweep(
    countdowns: list[tuple[str, float | None]], settings: Any
) -> None:
    settings.FULCRUM = {**settings.FULCRUM, "DELIVERY_CLAIM_SECONDS": 10}
    worker_ready.send(sender=None)
    # Now, and again when a claim the killed worker held on an outbox row has lapsed (claims are taken
    # for DELIVERY_CLAIM_SECONDS): its rows are sent then, not at beat's next outbox sweep.
    assert sorted(countdowns, key=str) == sorted(
        [
            (tasks.evaluate_pending.name, None),
            (escalation_tasks.deliver_due.name, None),
            (escalation_tasks.deliver_due.name, 11.0),
        ],
        key=str,
    )


@pytest.mark.django_db
def test_what_a_lost_flush_left_waiting_is_evaluated_by_the_queued_one(
    countdowns: list[tuple[str, float | None]],
) -> None:
    project: Project = ProjectFactory()
    on_entities_changed({"project": {project.pk}})  # no commit here: its flush is never scheduled, as if lost
    assert PendingEvaluation.objects.filter(subject_type="project", subject_id=project.pk).exists()
    worker_ready.send(sender=None)
    assert (tasks.evaluate_pending.name, None) in countdowns
    tasks.evaluate_pending()  # what the queued message runs
    assert not PendingEvaluation.objects.exists()


def test_a_broker_that_is_down_does_not_stop_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.evaluate_pending, "apply_async", down)
    monkeypatch.setattr(escalation_tasks.deliver_due, "apply_async", down)
    tasks.sweep_after_worker_start()  # logs, does not raise
