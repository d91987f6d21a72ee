"""Handing outbox rows to workers: one task per row for a few, chunked messages for many."""

from __future__ import annotations

import pytest
from django.utils import timezone

from apps.escalations import delivery
from apps.escalations.models import Delivery

# The end-to-end fixtures (a real Celery worker on the broker, an aiosmtpd server).
from tests.e2e.conftest import celery_worker, smtp_server, wait_for  # noqa: F401

from .helpers import make_escalation


def _rows(count: int, action: str = "flag_dashboard") -> list[int]:
    escalation = make_escalation()
    now = timezone.now()
    created = Delivery.objects.bulk_create(
        Delivery(
            escalation=escalation,
            action=action,
            target=f"dashboard-{i}",
            idempotency_key=f"esc{escalation.pk}:{action}:{i}",
            next_attempt_at=now,
            created_at=now,
        )
        for i in range(count)
    )
    return [d.pk for d in created]


@pytest.mark.django_db
def test_a_few_rows_are_one_task_each_and_many_go_in_chunks(monkeypatch):
    from apps.escalations import tasks

    single: list[int] = []
    chunked: list[list[int]] = []
    monkeypatch.setattr(tasks.deliver, "apply_async", lambda args, queue: single.append(args[0]))
    monkeypatch.setattr(tasks.deliver_many, "apply_async", lambda args, queue: chunked.append(args[0]))
    few = _rows(delivery.DISPATCH_CHUNK)
    delivery.deliveries_dispatch(few)
    assert single == few and chunked == []
    many = _rows(2 * delivery.DISPATCH_CHUNK + 1)
    delivery.deliveries_dispatch(many)
    assert single == few and chunked == [many[:64], many[64:128], many[128:]]


@pytest.mark.django_db
def test_emails_and_write_backs_go_to_separate_queues(monkeypatch):
    from apps.escalations import tasks

    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks.deliver, "apply_async", lambda args, queue: sent.append((args[0], queue)))
    emails = _rows(2, "email_account_manager")
    notes = _rows(2, "note_crm")
    delivery.deliveries_dispatch(notes + emails)
    assert sorted(sent) == sorted([(pk, "delivery") for pk in emails] + [(pk, "writeback") for pk in notes])


@pytest.mark.django_db
def test_the_sweeper_sends_due_emails_itself_and_hands_write_backs_to_their_queue(monkeypatch):
    from apps.escalations import tasks

    handed: list[list[int]] = []
    monkeypatch.setattr(tasks, "deliveries_dispatch", handed.append)
    flags = _rows(2)
    notes = _rows(2, "note_crm")

    assert tasks.deliver_due() == "4 due, 2 handed to writeback"

    assert handed == [notes]
    assert set(Delivery.objects.filter(pk__in=flags).values_list("state", flat=True)) == {"delivered"}
    assert set(Delivery.objects.filter(pk__in=notes).values_list("state", flat=True)) == {"pending"}


@pytest.mark.django_db
def test_one_rows_unexpected_error_does_not_stop_the_rest_of_its_chunk(monkeypatch):
    from apps.escalations import tasks

    attempted: list[int] = []

    def attempt(pk: int) -> str:
        attempted.append(pk)
        if pk == 2:
            raise ValueError("a template error in one row")
        return "delivered"

    monkeypatch.setattr(tasks, "delivery_attempt", attempt)
    assert tasks.deliver_many([1, 2, 3]) == "2 attempted, 1 failed"
    assert attempted == [1, 2, 3]


@pytest.mark.e2e
@pytest.mark.usefixtures("celery_worker")
def test_chunked_rows_are_all_delivered_by_a_real_worker():
    ids = _rows(2 * delivery.DISPATCH_CHUNK + 5)
    delivery.deliveries_dispatch(ids)
    wait_for(
        lambda: Delivery.objects.filter(pk__in=ids, state="delivered").count() == len(ids),
        timeout=90,
        message="every chunked row delivered",
    )
    assert set(Delivery.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
