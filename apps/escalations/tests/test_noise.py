"""Noise controls: the executive digest, quiet hours and the per-recipient hourly cap, each with a reason."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from django.utils import timezone

from apps.escalations.delivery import delivery_attempt
from apps.escalations.models import Delivery, DigestItem, EscalationPolicy, SuppressedNotification
from apps.escalations.noise import quiet_until
from apps.escalations.policies import policy_start
from apps.escalations.services import _queue_actions
from apps.escalations.tasks import deliver_due
from tests.factories import UserFactory

from .helpers import make_escalation

pytestmark = pytest.mark.django_db

CHI = zoneinfo.ZoneInfo("America/Chicago")
MONDAY = dt.date(2026, 11, 23)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=CHI)


def fire(when: dt.datetime, actions: list[str], **extra):
    """An escalation opening at ``when`` with these rule actions, through the policy and the outbox."""
    severity = extra.pop("severity", "high")
    with time_machine.travel(when, tick=False):
        escalation = make_escalation(**extra)
        if severity != escalation.severity:  # the shared helper always makes "high"
            escalation.severity = severity
            escalation.save(update_fields=["severity"])
        policy_start(escalation=escalation, now=timezone.now())
        _queue_actions(escalation, actions, timezone.now())
    return escalation


def reasons(**filters) -> list[tuple[str, str, str]]:
    return list(
        SuppressedNotification.objects.filter(**filters)
        .order_by("id")
        .values_list("action", "target", "reason")
    )


# --- digest --------------------------------------------------------------------------------------


def test_the_digest_sends_each_executive_one_email_listing_the_periods_new_escalations(
    noise, executive, account_manager
):
    noise.FULCRUM["EXECUTIVE_DIGEST"] = True
    UserFactory(username="ed", email="ed@fulcrum-demo.test").groups.add(executive.groups.get())
    opened = [
        fire(at(MONDAY, 10, 5 + i), ["email_executives", "email_account_manager"], client_name=f"Client {i}")
        for i in range(3)
    ]
    digests = list(Delivery.objects.filter(action="digest").order_by("target"))
    assert [d.target for d in digests] == ["ed@fulcrum-demo.test", "elena@fulcrum-demo.test"]
    assert not Delivery.objects.filter(action="email_executives").exists()
    # The account manager's own emails are not executives' and go out one by one.
    assert Delivery.objects.filter(action="email_account_manager").count() == 3
    for digest in digests:
        assert sorted(DigestItem.objects.filter(delivery=digest).values_list("escalation", flat=True)) == [
            e.pk for e in opened
        ]
        assert digest.next_attempt_at == at(MONDAY, 11)
    assert [r[2] for r in reasons()] == ["digest"] * 6
    assert SuppressedNotification.objects.filter(delivery__in=digests).count() == 6

    with time_machine.travel(at(MONDAY, 10, 59), tick=False):
        assert delivery_attempt(digests[0].pk) == "not-due"
    with time_machine.travel(at(MONDAY, 11), tick=False):
        assert [delivery_attempt(d.pk) for d in digests] == ["delivered", "delivered"]
    assert sorted(m.to[0] for m in mail.outbox) == ["ed@fulcrum-demo.test", "elena@fulcrum-demo.test"]
    for message in mail.outbox:
        assert message.subject == "[Fulcrum] Digest: 3 new escalations"
        for escalation in opened:
            assert escalation.subject_label in message.body
            assert f"/escalations/{escalation.pk}/" in message.alternatives[0][0]

    # The next period starts a new digest; the sent one is not reopened.
    fire(at(MONDAY, 11, 10), ["email_executives"], client_name="Later")
    later = Delivery.objects.filter(action="digest").exclude(pk__in=[d.pk for d in digests])
    assert later.count() == 2 and {d.next_attempt_at for d in later} == {at(MONDAY, 12)}


def test_a_policy_can_turn_the_digest_on_and_critical_escalations_bypass_it(noise, executive):
    EscalationPolicy.objects.create(name="Exec", route="executive", digest_executives=True)
    fire(at(MONDAY, 10), ["email_executives"], client_name="A")
    fire(at(MONDAY, 10, 1), ["email_executives"], client_name="B", severity="critical")
    assert Delivery.objects.filter(action="digest").count() == 1
    [immediate] = Delivery.objects.filter(action="email_executives")
    assert immediate.escalation.severity == "critical" and immediate.next_attempt_at == at(MONDAY, 10, 1)


def test_a_daily_digest_closes_at_the_companys_midnight_unless_that_is_quiet(noise, executive):
    noise.FULCRUM.update(EXECUTIVE_DIGEST=True, DIGEST_PERIOD=dt.timedelta(days=1))
    fire(at(MONDAY, 10), ["email_executives"], client_name="A")
    fire(at(MONDAY, 23, 50), ["email_executives"], client_name="B")
    [digest] = Delivery.objects.filter(action="digest")
    assert digest.next_attempt_at == at(MONDAY + dt.timedelta(days=1), 0)
    assert digest.digest_items.count() == 2
    noise.FULCRUM["QUIET_HOURS"] = "22-7"
    fire(at(MONDAY + dt.timedelta(days=1), 10), ["email_executives"], client_name="C")
    later = Delivery.objects.filter(action="digest").exclude(pk=digest.pk).get()
    assert later.next_attempt_at == at(MONDAY + dt.timedelta(days=2), 7)  # midnight is quiet: 07:00


def test_without_the_digest_executives_get_one_email_each(noise, executive):
    for i in range(2):
        fire(at(MONDAY, 10), ["email_executives"], client_name=f"C{i}")
    assert Delivery.objects.filter(action="email_executives").count() == 2
    assert not Delivery.objects.filter(action="digest").exists() and reasons() == []


# --- quiet hours ---------------------------------------------------------------------------------


def test_quiet_hours_span_midnight_in_the_company_time_zone(noise):
    noise.FULCRUM["QUIET_HOURS"] = "22-7"
    tuesday = MONDAY + dt.timedelta(days=1)
    assert quiet_until(at(MONDAY, 21, 59)) is None
    assert quiet_until(at(MONDAY, 22)) == at(tuesday, 7)
    assert quiet_until(at(tuesday, 3)) == at(tuesday, 7)
    assert quiet_until(at(tuesday, 7)) is None
    noise.FULCRUM["QUIET_HOURS"] = "12-13"
    assert quiet_until(at(MONDAY, 12, 30)) == at(MONDAY, 13)
    noise.FULCRUM["QUIET_HOURS"] = "22-late"
    with pytest.raises(ImproperlyConfigured):
        quiet_until(at(MONDAY, 12))


def test_quiet_hours_defer_emails_then_deliver_them(noise, account_manager):
    noise.FULCRUM["QUIET_HOURS"] = "22-7"
    tuesday = MONDAY + dt.timedelta(days=1)
    escalation = fire(
        at(MONDAY, 23, 30), ["email_account_manager", "flag_dashboard"], owner_user=account_manager
    )
    email = Delivery.objects.get(action="email_account_manager")
    assert email.next_attempt_at == at(tuesday, 7)
    [held] = SuppressedNotification.objects.all()
    assert (held.reason, held.delivery, held.deferred_until) == ("quiet_hours", email, at(tuesday, 7))
    assert held.escalation == escalation and "22-7" in held.detail

    with time_machine.travel(at(MONDAY, 23, 31), tick=False):
        deliver_due()
    # The dashboard flag is not a notification to a person: it went out at once.
    assert Delivery.objects.get(action="flag_dashboard").state == "delivered"
    assert Delivery.objects.get(action="email_account_manager").state == "pending" and mail.outbox == []
    with time_machine.travel(at(tuesday, 7), tick=False):
        deliver_due()
    assert Delivery.objects.get(action="email_account_manager").state == "delivered"
    assert [m.to for m in mail.outbox] == [["maria@fulcrum-demo.test"]]


def test_critical_escalations_reach_executives_during_quiet_hours(noise, executive, account_manager):
    noise.FULCRUM["QUIET_HOURS"] = "22-7"
    fire(
        at(MONDAY, 23, 30),
        ["email_executives", "email_account_manager"],
        owner_user=account_manager,
        severity="critical",
    )
    assert Delivery.objects.get(action="email_executives").next_attempt_at == at(MONDAY, 23, 30)
    assert Delivery.objects.get(action="email_account_manager").next_attempt_at == at(
        MONDAY + dt.timedelta(days=1), 7
    )
    assert reasons() == [("email_account_manager", "maria@fulcrum-demo.test", "quiet_hours")]


# --- hourly cap ----------------------------------------------------------------------------------


def test_the_hourly_cap_suppresses_beyond_n_per_recipient_and_records_why(noise, account_manager):
    noise.FULCRUM["RECIPIENT_HOURLY_CAP"] = 3
    for i in range(5):
        fire(
            at(MONDAY, 10, i),
            ["email_account_manager", "flag_dashboard"],
            owner_user=account_manager,
            client_name=f"C{i}",
        )
    assert Delivery.objects.filter(action="email_account_manager").count() == 3
    assert Delivery.objects.filter(action="flag_dashboard").count() == 5  # not capped: not an email
    capped = SuppressedNotification.objects.filter(reason="capped")
    assert capped.count() == 2
    # Held back, never dropped: rolled into the person's next digest (the default period, an hour).
    [digest] = Delivery.objects.filter(action="digest", target="maria@fulcrum-demo.test")
    assert all(s.delivery == digest and "cap 3" in s.detail for s in capped)
    assert {s.escalation.client.name for s in capped} == {"C3", "C4"}
    assert digest.next_attempt_at == at(MONDAY, 11)
    assert sorted(i.escalation.client.name for i in digest.digest_items.filter(kind="capped")) == ["C3", "C4"]
    # An hour after the first three, the recipient can be told again.
    fire(at(MONDAY, 11, 3), ["email_account_manager"], owner_user=account_manager, client_name="C5")
    assert Delivery.objects.filter(action="email_account_manager").count() == 4


def test_the_cap_is_per_recipient(noise, account_manager, other_account_manager):
    noise.FULCRUM["RECIPIENT_HOURLY_CAP"] = 1
    fire(at(MONDAY, 10), ["email_account_manager"], owner_user=account_manager, client_name="A")
    fire(at(MONDAY, 10), ["email_account_manager"], owner_user=other_account_manager, client_name="B")
    fire(at(MONDAY, 10), ["email_account_manager"], owner_user=account_manager, client_name="C")
    assert sorted(Delivery.objects.exclude(action="digest").values_list("target", flat=True)) == [
        "james@fulcrum-demo.test",
        "maria@fulcrum-demo.test",
    ]
    assert reasons() == [("email_account_manager", "maria@fulcrum-demo.test", "capped")]


# --- admin ---------------------------------------------------------------------------------------


def test_suppressed_notifications_are_listed_in_admin_with_their_reason(
    noise, client, administrator, account_manager, django_assert_max_num_queries
):
    noise.FULCRUM["RECIPIENT_HOURLY_CAP"] = 1
    noise.FULCRUM["QUIET_HOURS"] = "22-7"
    for i in range(6):
        fire(at(MONDAY, 23), ["email_account_manager"], owner_user=account_manager, client_name=f"C{i}")
    assert SuppressedNotification.objects.count() == 6  # one deferred, five capped
    client.force_login(administrator)
    url = reverse("admin:escalations_suppressednotification_changelist")
    with django_assert_max_num_queries(10):
        page = client.get(url).content.decode()
    assert "rolled into the next digest: hourly cap" in page and "deferred: quiet hours" in page
    assert client.get(url, {"reason": "capped"}).status_code == 200
    escalation_page = client.get(
        reverse(
            "admin:escalations_escalation_change", args=[SuppressedNotification.objects.first().escalation_id]
        )
    )
    assert escalation_page.status_code == 200 and "hourly cap" in escalation_page.content.decode()


def test_a_flag_is_delivered_when_queued_and_an_unknown_action_left_for_the_worker():
    """The dashboard flag has nothing left to do once its escalation is open: its row goes in delivered
    and to no worker. A row of an action this code does not know (a rule version from another release)
    goes in pending, and the worker refuses it, as before."""
    from django.db import connection, transaction

    from apps.escalations.noise import Notice, notify

    escalation = make_escalation()
    now = timezone.now()
    with transaction.atomic():
        due = notify(
            escalation=escalation,
            notices=[
                Notice("flag_dashboard", "dashboard", f"esc{escalation.pk}:flag_dashboard:dashboard"),
                Notice("retired_action", "somewhere", f"esc{escalation.pk}:retired_action:somewhere"),
            ],
            now=now,
            new=True,
        )
        connection.run_on_commit.clear()  # nothing is handed to a worker in this test
    flag = Delivery.objects.get(action="flag_dashboard")
    assert (flag.state, flag.attempts, flag.delivered_at, flag.response) == (
        "delivered", 1, now, {"flagged": True}
    )  # fmt: skip
    retired = Delivery.objects.get(action="retired_action")
    assert due == [retired.pk] and retired.state == "pending"
    assert delivery_attempt(retired.pk) == "dead"
