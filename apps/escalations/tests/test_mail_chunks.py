"""A chunk of outbox emails over a real SMTP server (aiosmtpd, in this process): one claim, one connection,
one record; a failure mid-chunk stops only its own row, and a server that is down loses nothing."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.escalations import actions, tasks
from apps.escalations.actions.email import UNREACHABLE, message_id
from apps.escalations.models import Delivery

from .helpers import make_escalation

pytestmark = pytest.mark.django_db


def _emails(count: int, targets: list[str] | None = None, key: str = "chunk") -> list[Delivery]:
    now = timezone.now()
    return [
        Delivery.objects.create(
            escalation=make_escalation(client_name=f"Client {i}"),
            action="email_account_manager",
            target=targets[i % len(targets)] if targets else f"am{i}@fulcrum-demo.test",
            idempotency_key=f"{key}:{i}",
            next_attempt_at=now,
            created_at=now,
        )
        for i in range(count)
    ]


def _states(rows: list[Delivery]) -> list[tuple[str, int]]:
    by_pk = Delivery.objects.in_bulk([r.pk for r in rows])
    return [(by_pk[r.pk].state, by_pk[r.pk].attempts) for r in rows]


def test_a_chunks_emails_go_over_one_smtp_connection_claimed_and_recorded_once(smtp):
    rows = _emails(6)
    with CaptureQueriesContext(connection) as queries:
        assert tasks.deliver_many([r.pk for r in rows]) == "6 rows: 6 delivered"

    assert [(to, mid) for to, mid, _ in smtp.accepted] == [(r.target, message_id(r)) for r in rows]
    assert len({port for _, _, port in smtp.accepted}) == 1  # one connection for the chunk
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 2  # the claim of all six and the record of all six
    assert _states(rows) == [("delivered", 1)] * 6
    delivered = Delivery.objects.get(pk=rows[0].pk)
    assert delivered.response == {"to": rows[0].target} and delivered.delivered_at is not None

    # Delivered rows are not due: the same chunk again sends nothing.
    assert tasks.deliver_many([r.pk for r in rows]) == "6 rows: none due"
    assert len(smtp.accepted) == 6


def test_a_refusal_mid_chunk_fails_only_its_row_and_its_retry_carries_the_same_message_id(smtp):
    rows = _emails(5)
    smtp.answer[rows[2].target] = "451 4.3.0 try again later"
    before = timezone.now()

    assert tasks.deliver_many([r.pk for r in rows]) == "5 rows: 4 delivered, 1 failed"

    assert [to for to, _, _ in smtp.accepted] == [r.target for r in rows if r != rows[2]]
    assert _states(rows) == [("delivered", 1)] * 2 + [("failed", 1)] + [("delivered", 1)] * 2
    failed = Delivery.objects.get(pk=rows[2].pk)
    assert "SMTP 451" in failed.last_error and failed.next_attempt_at > before
    # The rows after it went on over a fresh connection (a failure closes the one it happened on).
    assert len({port for _, _, port in smtp.accepted}) == 2

    del smtp.answer[rows[2].target]
    Delivery.objects.filter(pk=failed.pk).update(next_attempt_at=timezone.now())
    assert tasks.deliver_many([r.pk for r in rows]) == "5 rows: 1 delivered"
    assert smtp.to(rows[2].target) == [(rows[2].target, message_id(rows[2]), smtp.accepted[-1][2])]
    assert _states(rows)[2] == ("delivered", 2)


def test_a_connection_cut_mid_chunk_fails_that_row_and_the_rest_reconnect(smtp):
    rows = _emails(4)
    smtp.drop.add(rows[1].target)

    assert tasks.deliver_many([r.pk for r in rows]) == "4 rows: 3 delivered, 1 failed"

    assert [to for to, _, _ in smtp.accepted] == [rows[0].target, rows[2].target, rows[3].target]
    assert _states(rows) == [("delivered", 1), ("failed", 1), ("delivered", 1), ("delivered", 1)]
    # A lost connection may be the server going away: the row waits for its return (``mail_return``).
    assert Delivery.objects.get(pk=rows[1].pk).last_error.startswith(f"{UNREACHABLE}: SMTPServerDisconnected")


def test_smtp_down_fails_the_chunk_at_once_and_loses_nothing(smtp):
    rows = _emails(4)
    smtp.stop()  # connection refused
    before = timezone.now()

    assert tasks.deliver_many([r.pk for r in rows]) == "4 rows: 4 failed"

    assert _states(rows) == [("failed", 1)] * 4
    assert all(r.next_attempt_at > before for r in Delivery.objects.filter(pk__in=[r.pk for r in rows]))
    smtp.start()
    Delivery.objects.filter(pk__in=[r.pk for r in rows]).update(next_attempt_at=timezone.now())
    assert tasks.deliver_many([r.pk for r in rows]) == "4 rows: 4 delivered"
    assert sorted(to for to, _, _ in smtp.accepted) == sorted(r.target for r in rows)
    assert _states(rows) == [("delivered", 2)] * 4


def test_a_chunk_gives_back_what_it_has_not_started_when_half_its_claim_is_gone(smtp, settings, monkeypatch):
    """No row of a slow chunk is still unsent when its claim runs out (another worker would take it)."""
    settings.FULCRUM = {**settings.FULCRUM, "DELIVERY_CLAIM_SECONDS": 0.4}
    rows = _emails(3)
    email = actions.get("email_account_manager")
    real = email.perform

    def slow(delivery: Delivery) -> dict:
        time.sleep(0.3)
        return real(delivery)

    monkeypatch.setattr(email, "perform", slow)
    assert tasks.deliver_many([r.pk for r in rows]) == "3 rows: 2 deferred, 1 delivered"
    assert [to for to, _, _ in smtp.accepted] == [rows[0].target]
    # Given back untried: pending, due now, and the attempt not counted.
    assert _states(rows) == [("delivered", 1), ("pending", 0), ("pending", 0)]
    given_back = Delivery.objects.get(pk=rows[1].pk)
    assert given_back.claimed_until is None and given_back.next_attempt_at <= timezone.now()


def test_a_row_another_worker_holds_is_left_out_of_the_chunk(smtp):
    rows = _emails(3)
    held = timezone.now() + dt.timedelta(minutes=5)
    Delivery.objects.filter(pk=rows[1].pk).update(state="sending", attempts=1, claimed_until=held)

    assert tasks.deliver_many([r.pk for r in rows]) == "3 rows: 2 delivered"
    assert [to for to, _, _ in smtp.accepted] == [rows[0].target, rows[2].target]
    assert _states(rows)[1] == ("sending", 1)


def test_a_chunk_looks_its_recipients_up_together_for_their_links(
    smtp, account_manager, executive, other_account_manager
):
    def people_queries(targets: list[str]) -> list[str]:
        rows = _emails(len(targets), targets=targets, key=f"chunk{len(targets)}")
        with CaptureQueriesContext(connection) as queries:
            assert tasks.deliver_many([r.pk for r in rows]) == f"{len(rows)} rows: {len(rows)} delivered"
        return [q["sql"] for q in queries.captured_queries if "auth_user" in q["sql"]]

    # Six emails to two people: the users with their addresses, then which of them may decide.
    assert len(people_queries([account_manager.email, executive.email] * 3)) == 2
    # Four people, one without an account: the CRM owners of that address are asked too, once.
    four = [account_manager.email, executive.email, other_account_manager.email, "nobody@elsewhere.test"]
    assert len(people_queries(four * 2)) == 3

    # Each still gets the links their role allows: an executive may approve, an account manager not.
    pairs = zip(smtp.accepted, smtp.contents, strict=True)
    approve = {to: b"Approve: http" in content for (to, _, _), content in pairs}
    assert len(smtp.accepted) == 14 and approve == {
        account_manager.email: False,
        executive.email: True,
        other_account_manager.email: False,
        "nobody@elsewhere.test": False,
    }
