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
def queued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    for task in (tasks.evaluate_pending, escalation_tasks.deliver_due):
        monkeypatch.setattr(task, "apply_async", lambda *a, _name=task.name, **kw: names.append(_name))
    return names


def test_a_started_worker_queues_the_flush_and_the_outbox_sweep(queued: list[str]) -> None:
    worker_ready.send(sender=None)
    assert sorted(queued) == sorted([tasks.evaluate_pending.name, escalation_tasks.deliver_due.name])


@pytest.mark.django_db
def test_what_a_lost_flush_left_waiting_is_evaluated_by_the_queued_one(queued: list[str]) -> None:
    project: Project = ProjectFactory()
    on_entities_changed({"project": {project.pk}})  # no commit here: its flush is never scheduled, as if lost
    assert PendingEvaluation.objects.filter(subject_type="project", subject_id=project.pk).exists()
    worker_ready.send(sender=None)
    assert tasks.evaluate_pending.name in queued
    tasks.evaluate_pending()  # what the queued message runs
    assert not PendingEvaluation.objects.exists()


def test_a_broker_that_is_down_does_not_stop_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.evaluate_pending, "apply_async", down)
    monkeypatch.setattr(escalation_tasks.deliver_due, "apply_async", down)
    tasks.sweep_after_worker_start()  # logs, does not raise
