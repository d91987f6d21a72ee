"""Handing outbox rows to workers: one task per row for a few, chunked messages for many."""

from __future__ import annotations

import datetime as dt

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
            target=f"dashboard-{i:04d}",
            idempotency_key=f"esc{escalation.pk}:{action}:{i}",
            next_attempt_at=now,
            created_at=now,
        )
        for i in range(count)
    )
    return [d.pk for d in created]


@pytest.mark.django_db
def test_one_dispatch_publishes_every_task_through_one_producer(monkeypatch):
    """A first run hands ~1,000 tasks over at once: they share one producer (one broker connection)
    instead of acquiring one from the pool per message."""
    from apps.escalations import tasks

    producers: list[object] = []
    monkeypatch.setattr(
        tasks.deliver, "apply_async", lambda args, queue, producer: producers.append(producer)
    )
    monkeypatch.setattr(
        tasks.deliver_many, "apply_async", lambda args, queue, producer: producers.append(producer)
    )
    delivery.deliveries_dispatch(_rows(delivery.DISPATCH_SPREAD * delivery.DISPATCH_CHUNK + 1))
    # Nine chunks: eight of DISPATCH_CHUNK rows and the last row alone (``deliver``).
    assert len(producers) == delivery.DISPATCH_SPREAD + 1
    assert None not in producers and len({id(p) for p in producers}) == 1


@pytest.mark.django_db
def test_a_few_rows_are_one_task_each_and_a_burst_is_spread_in_chunks(monkeypatch):
    """Every worker slot gets a share of a burst at once: at least DISPATCH_SPREAD tasks, each of at most
    DISPATCH_CHUNK rows (one claim, one SMTP connection, one record per task)."""
    from apps.escalations import tasks

    single: list[int] = []
    chunked: list[list[int]] = []
    monkeypatch.setattr(tasks.deliver, "apply_async", lambda args, queue, producer: single.append(args[0]))
    monkeypatch.setattr(
        tasks.deliver_many, "apply_async", lambda args, queue, producer: chunked.append(args[0])
    )
    few = _rows(delivery.DISPATCH_SPREAD)
    delivery.deliveries_dispatch(few)
    assert single == few and chunked == []

    some = _rows(3 * delivery.DISPATCH_SPREAD)
    delivery.deliveries_dispatch(some)
    assert single == few and [len(c) for c in chunked] == [3] * delivery.DISPATCH_SPREAD
    assert [pk for chunk in chunked for pk in chunk] == some

    chunked.clear()
    burst = _rows(400)
    delivery.deliveries_dispatch(burst)
    assert [len(c) for c in chunked] == [delivery.DISPATCH_CHUNK] * (400 // delivery.DISPATCH_CHUNK)
    assert [pk for chunk in chunked for pk in chunk] == burst


@pytest.mark.django_db
def test_a_bursts_emails_to_one_person_share_chunks(monkeypatch):
    from apps.escalations import tasks

    chunked: list[list[int]] = []
    monkeypatch.setattr(
        tasks.deliver_many, "apply_async", lambda args, queue, producer: chunked.append(args[0])
    )
    escalation = make_escalation()
    now = timezone.now()
    rows = Delivery.objects.bulk_create(
        Delivery(
            escalation=escalation,
            action="email_executives",
            target=f"{'elena' if i % 2 else 'maria'}@fulcrum-demo.test",
            idempotency_key=f"esc{escalation.pk}:email:{i}",
            next_attempt_at=now,
            created_at=now,
        )
        for i in range(2 * delivery.DISPATCH_CHUNK)
    )
    delivery.deliveries_dispatch([r.pk for r in rows])
    targets = {r.pk: r.target for r in rows}
    people = [{targets[pk] for pk in chunk} for chunk in chunked]
    half = len(people) // 2
    assert people == [{"elena@fulcrum-demo.test"}] * half + [{"maria@fulcrum-demo.test"}] * half


@pytest.mark.django_db
def test_emails_and_write_backs_go_to_separate_queues(monkeypatch):
    from apps.escalations import tasks

    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(
        tasks.deliver, "apply_async", lambda args, queue, producer: sent.append((args[0], queue))
    )
    emails = _rows(2, "email_account_manager")
    notes = _rows(2, "note_crm")
    delivery.deliveries_dispatch(notes + emails)
    assert sorted(sent) == sorted([(pk, "delivery") for pk in emails] + [(pk, "writeback") for pk in notes])


@pytest.mark.django_db
def test_a_bursts_emails_are_handed_out_before_its_write_backs(monkeypatch):
    """People wait for the emails; a vendor note can wait for them (``deliveries_dispatch``). Write-back
    targets sort before addresses, so the order is the dispatch's own, not the rows'."""
    from apps.escalations import tasks

    queues: list[str] = []
    monkeypatch.setattr(tasks.deliver, "apply_async", lambda args, queue, producer: queues.append(queue))
    monkeypatch.setattr(tasks.deliver_many, "apply_async", lambda args, queue, producer: queues.append(queue))
    notes = _rows(3 * delivery.DISPATCH_SPREAD, "note_crm")
    emails = _rows(3 * delivery.DISPATCH_SPREAD, "email_account_manager")
    Delivery.objects.filter(pk__in=emails).update(target="zoe@fulcrum-demo.test")
    Delivery.objects.filter(pk__in=notes).update(target="1:5100145159")
    delivery.deliveries_dispatch(notes + emails)
    assert queues == ["delivery"] * delivery.DISPATCH_SPREAD + ["writeback"] * delivery.DISPATCH_SPREAD


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
    from apps.escalations import actions, tasks

    ids = _rows(3)
    flag = actions.get("flag_dashboard")
    real = flag.perform

    def perform(row: Delivery) -> dict:
        if row.pk == ids[1]:
            raise ValueError("a template error in one row")
        return real(row)

    monkeypatch.setattr(flag, "perform", perform)
    assert tasks.deliver_many(ids) == "3 rows: 2 delivered, 1 error"
    states = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "state"))
    # The row that broke keeps its claim: the sweeper takes it again when the claim runs out.
    assert states == {ids[0]: "delivered", ids[1]: "sending", ids[2]: "delivered"}


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


@pytest.mark.django_db
def test_on_one_queue_a_bursts_emails_are_handed_out_before_its_dashboard_flags(monkeypatch):
    """Flags share the ``delivery`` queue with the emails but nobody waits for them: the rows that reach a
    person go first, whatever their targets sort as ("dashboard" sorts before most addresses)."""
    from apps.escalations import tasks

    chunked: list[list[int]] = []
    monkeypatch.setattr(
        tasks.deliver_many, "apply_async", lambda args, queue, producer: chunked.append(args[0])
    )
    flags = _rows(3 * delivery.DISPATCH_CHUNK)
    emails = _rows(3 * delivery.DISPATCH_CHUNK, "email_executives")
    Delivery.objects.filter(pk__in=emails).update(target="zoe@fulcrum-demo.test")
    delivery.deliveries_dispatch(flags + emails)
    assert [pk for chunk in chunked for pk in chunk] == emails + flags


@pytest.mark.django_db
def test_a_chunk_that_meets_a_spent_budget_gives_its_rows_back_together_and_queues_them_as_one_task(
    monkeypatch,
):
    """A burst of notes outruns the vendor's budget: the chunk's rows go back to ``pending`` (their
    attempts given back, due when the budget refills) and come back as one chunk, not one task per row."""
    from apps.connectors.ratelimit import RateBudgetDeferred
    from apps.escalations import actions, tasks

    ids = _rows(4, "note_crm")
    note = actions.get("note_crm")
    sent: list[int] = []

    def perform(row: Delivery) -> dict:
        if sent:  # the first note spends the budget
            raise RateBudgetDeferred("hubspot:1", 2.0)
        sent.append(row.pk)
        return {"id": "n1"}

    queued: list[tuple[object, float, str]] = []
    monkeypatch.setattr(note, "perform", perform)
    monkeypatch.setattr(
        tasks.deliver_many,
        "apply_async",
        lambda args, countdown, queue: queued.append((args[0], countdown, queue)),
    )
    monkeypatch.setattr(tasks.deliver, "apply_async", lambda *a, **kw: pytest.fail("one task per row"))
    before = timezone.now()

    # As a worker runs it (a retry is queued only from inside a task).
    assert tasks.deliver_many.apply((ids,), task_id="chunk").get() == "4 rows: 3 deferred, 1 delivered"

    assert sent == ids[:1]
    assert queued == [(ids[1:], pytest.approx(2.1), "writeback")]
    rows = Delivery.objects.filter(pk__in=ids[1:])
    assert {(r.state, r.attempts, r.claimed_until) for r in rows} == {("pending", 0, None)}
    assert all(r.next_attempt_at >= before + dt.timedelta(seconds=2) for r in rows)
