"""A worker (re)started after a crash queues the evaluation flush and the outbox sweep at once: the countdown
messages a SIGKILLed worker held (a scheduled flush, an outbox retry) come back from Redis only after its
visibility timeout."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from celery.signals import worker_ready
from django.utils import timezone

from apps.entities.models import Project
from apps.escalations import tasks as escalation_tasks
from apps.escalations.models import Delivery
from apps.escalations.tests.helpers import make_escalation
from apps.orchestration import tasks
from apps.rules.evaluation.triggers import on_entities_changed
from apps.rules.models import PendingEvaluation
from tests.factories import ProjectFactory


@pytest.fixture
def countdowns(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float | None]]:
    sent: list[tuple[str, float | None]] = []
    for task in (
        tasks.evaluate_pending,
        escalation_tasks.deliver_due,
        escalation_tasks.deliver_when_claims_lapse,
    ):
        monkeypatch.setattr(
            task, "apply_async", lambda *a, _name=task.name, **kw: sent.append((_name, kw.get("countdown")))
        )
    return sent


def test_a_started_worker_queues_the_flush_and_the_outbox_sweep(
    countdowns: list[tuple[str, float | None]],
) -> None:
    worker_ready.send(sender=None)
    # Now, and (read in a pool process) for when the claims a killed worker held on outbox rows lapse.
    assert sorted(countdowns, key=str) == sorted(
        [
            (tasks.evaluate_pending.name, None),
            (escalation_tasks.deliver_due.name, None),
            (escalation_tasks.deliver_when_claims_lapse.name, None),
        ],
        key=str,
    )


@pytest.mark.django_db
def test_a_sweep_is_queued_for_each_moment_claims_lapse(countdowns: list[tuple[str, float | None]]) -> None:
    # A killed worker's rows are due when their claims lapse, not a whole claim after the restart.
    now = timezone.now()
    # Claims are grouped by the tenth of a second they lapse in: 10 ms past a tenth, so the two 20 ms apart
    # share theirs whatever the clock reads (from now itself they straddled one in a fifth of the runs).
    now -= dt.timedelta(microseconds=now.microsecond % 100_000 - 10_000)
    escalation = make_escalation()
    for n, lapse in enumerate(
        [3.0, 3.02, 7.5, -1.0, None]
    ):  # two in the same tenth; one lapsed; one not held
        Delivery.objects.create(
            escalation=escalation,
            action="email_account_manager",
            target=f"am{n}@fulcrum-demo.test",
            idempotency_key=f"lapse:{n}",
            state=Delivery.State.PENDING if lapse is None else Delivery.State.SENDING,
            claimed_until=None if lapse is None else now + dt.timedelta(seconds=lapse),
            next_attempt_at=now,
            created_at=now,
        )
    assert escalation_tasks.deliver_when_claims_lapse() == "2 outbox sweeps queued for lapsing claims"
    waits = sorted(countdown for name, countdown in countdowns if name == escalation_tasks.deliver_due.name)
    assert len(waits) == 2 and 2.5 < waits[0] <= 3.25 and 7.0 < waits[1] <= 7.75


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
