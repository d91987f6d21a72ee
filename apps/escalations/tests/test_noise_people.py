"""Noise, grouped per person: each person's quiet hours (in their time zone), digest and hourly cap, with
the company defaults for whatever they did not set; what the cap holds back waits for the next digest;
notices of what someone did pass the same controls."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
import time_machine
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import NotificationSettings
from apps.audit.models import AuditEntry
from apps.escalations import services
from apps.escalations.delivery import NOTIFY_ACTION
from apps.escalations.models import Delivery, DigestItem, SuppressedNotification
from apps.escalations.noise import Notice, notify_many
from apps.escalations.tasks import deliver_due

from .helpers import make_escalation
from .test_noise import MONDAY, at, fire

pytestmark = pytest.mark.django_db

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def test_217_escalations_in_a_minute_reach_an_executive_as_one_digest_with_the_defaults(
    settings, executive, account_manager
):
    """The issue's measurement: with the defaults, 217 escalations sent 217 emails to one executive."""
    settings.TIME_ZONE = "America/Chicago"
    assert settings.FULCRUM["EXECUTIVE_DIGEST"] is True  # the shipped default, not set by this test
    period = settings.FULCRUM["DIGEST_PERIOD"]
    start = at(MONDAY, 10, 0)
    with time_machine.travel(start, tick=False):
        escalations = [make_escalation(client_name=f"Client {i:03}") for i in range(217)]
    # Opened within one minute, in batches of various sizes as bulk runs and single events open them.
    batches = [escalations[:1], escalations[1:100], escalations[100:101], escalations[101:]]
    for n, batch in enumerate(batches):
        now = start + dt.timedelta(seconds=15 * n)
        notify_many(
            items=[
                (e, [Notice("email_executives", executive.email, f"esc{e.pk}:email_executives")])
                for e in batch
            ],
            now=now,
            new=True,
        )
    to_her = Delivery.objects.filter(target=executive.email)
    [digest] = to_her
    assert digest.action == "digest" and digest.digest_items.count() == 217
    assert SuppressedNotification.objects.filter(target=executive.email, reason="digest").count() == 217

    with time_machine.travel(start + period - dt.timedelta(seconds=1), tick=False):
        deliver_due()
    assert mail.outbox == []
    with time_machine.travel(start + period, tick=False):
        deliver_due()
    [message] = mail.outbox
    assert message.to == [executive.email]
    assert message.subject == "[Fulcrum] Digest: 217 new escalations"
    assert all(f"/escalations/{e.pk}/" in message.body for e in escalations)
    assert "Why: Change order amount $60,000.00 is at least $50,000.00" in message.body


def test_quiet_hours_follow_each_persons_time_zone(noise, account_manager, other_account_manager):
    # Maria works from Berlin and wants nothing between 22:00 and 07:00 there; James keeps the defaults.
    NotificationSettings.objects.create(user=account_manager, time_zone="Europe/Berlin", quiet_hours="22-7")
    when = at(MONDAY, 16, 30)  # 16:30 in Chicago is 23:30 in Berlin
    fire(when, ["email_account_manager"], owner_user=account_manager, client_name="Hers")
    fire(when, ["email_account_manager"], owner_user=other_account_manager, client_name="His")
    hers = Delivery.objects.get(target=account_manager.email)
    his = Delivery.objects.get(target=other_account_manager.email)
    assert his.next_attempt_at == when
    tuesday_7_berlin = dt.datetime.combine(MONDAY + dt.timedelta(days=1), dt.time(7), tzinfo=BERLIN)
    assert hers.next_attempt_at == tuesday_7_berlin
    [held] = SuppressedNotification.objects.all()
    assert held.reason == "quiet_hours" and "22-7 (Europe/Berlin)" in held.detail
    # The company's quiet hours apply to those without their own ...
    noise.FULCRUM["QUIET_HOURS"] = "12-13"
    fire(at(MONDAY, 12, 15), ["email_account_manager"], owner_user=other_account_manager, client_name="B")
    later = Delivery.objects.filter(target=other_account_manager.email).latest("id")
    assert later.next_attempt_at == at(MONDAY, 13)
    # ... and "off" is a person's way to have none.
    NotificationSettings.objects.create(user=other_account_manager, quiet_hours="off")
    fire(at(MONDAY, 12, 20), ["email_account_manager"], owner_user=other_account_manager, client_name="C")
    assert Delivery.objects.filter(target=other_account_manager.email).latest("id").next_attempt_at == at(
        MONDAY, 12, 20
    )


def test_what_the_cap_holds_back_is_rolled_into_the_next_digest_and_sent(noise, account_manager):
    NotificationSettings.objects.create(user=account_manager, hourly_cap=2)
    opened = [
        fire(at(MONDAY, 10, i), ["email_account_manager"], owner_user=account_manager, client_name=f"C{i}")
        for i in range(5)
    ]
    assert Delivery.objects.filter(action="email_account_manager").count() == 2
    [digest] = Delivery.objects.filter(action="digest", target=account_manager.email)
    assert digest.next_attempt_at == at(MONDAY, 11)
    held = list(DigestItem.objects.filter(delivery=digest).order_by("id"))
    assert [(i.escalation, i.kind) for i in held] == [(e, "capped") for e in opened[2:]]
    capped = SuppressedNotification.objects.filter(reason="capped")
    assert capped.count() == 3 and {s.delivery_id for s in capped} == {digest.pk}

    with time_machine.travel(at(MONDAY, 11), tick=False):
        deliver_due()
    digests = [m for m in mail.outbox if "Digest" in m.subject]
    [message] = digests
    assert message.subject == "[Fulcrum] Digest: 3 new escalations"
    assert "3 of them reached your hourly limit" in message.body
    for escalation in opened[2:]:
        assert escalation.client.name in message.body
    for escalation in opened[:2]:
        assert f"/escalations/{escalation.pk}/" not in message.body
    # The digest counted toward the hour like any email: sent together with the two, nothing was lost.
    assert Delivery.objects.filter(target=account_manager.email, state="delivered").count() == 3


def test_a_persons_settings_override_the_defaults_and_zero_turns_a_control_off(noise, executive):
    noise.FULCRUM.update(EXECUTIVE_DIGEST=True, RECIPIENT_HOURLY_CAP=1)
    NotificationSettings.objects.create(user=executive, digest_minutes=0, hourly_cap=0)
    for i in range(3):
        fire(at(MONDAY, 10, i), ["email_executives"], client_name=f"C{i}")
    assert Delivery.objects.filter(action="email_executives").count() == 3
    assert (
        not Delivery.objects.filter(action="digest").exists() and not SuppressedNotification.objects.exists()
    )


def test_a_daily_digest_in_the_persons_time_zone(noise, account_manager):
    NotificationSettings.objects.create(user=account_manager, time_zone="Europe/Berlin", digest_minutes=1440)
    fire(at(MONDAY, 10), ["email_account_manager"], owner_user=account_manager, client_name="A")
    [digest] = Delivery.objects.filter(action="digest")
    # Closes at Berlin's midnight (17:00 in Chicago), not the company's.
    assert digest.next_attempt_at == dt.datetime.combine(
        MONDAY + dt.timedelta(days=1), dt.time(0), tzinfo=BERLIN
    )


def _told(escalation, *people):
    now = timezone.now()
    for person in people:
        Delivery.objects.create(
            escalation=escalation,
            action="email_account_manager",
            target=person.email,
            idempotency_key=f"k:{escalation.pk}:{person.email}",
            state=Delivery.State.DELIVERED,
            next_attempt_at=now,
            created_at=now,
        )


def test_notices_go_into_an_executives_digest_by_default(settings, executive, account_manager):
    settings.TIME_ZONE = "America/Chicago"
    with time_machine.travel(at(MONDAY, 10), tick=False):
        escalation = make_escalation(owner_user=account_manager)
        _told(escalation, executive)
        services.escalation_acknowledge(escalation=escalation, actor=account_manager, note="on it")
    assert not Delivery.objects.filter(action=NOTIFY_ACTION).exists()
    [digest] = Delivery.objects.filter(action="digest", target=executive.email)
    [item] = digest.digest_items.all()
    assert item.event.kind == "acknowledged" and item.escalation == escalation
    # The same event notified again changes nothing.
    services.stakeholders_notify(escalation=escalation, actor=account_manager)
    assert DigestItem.objects.count() == 1
    with time_machine.travel(at(MONDAY, 11), tick=False):
        deliver_due()
    [message] = mail.outbox
    assert message.subject == "[Fulcrum] Digest: 1 update"
    assert "Acknowledged by maria" in message.body and "on it" in message.body


def test_notices_obey_quiet_hours_and_the_cap(noise, executive, account_manager, other_account_manager):
    NotificationSettings.objects.create(user=account_manager, time_zone="Europe/Berlin", quiet_hours="22-7")
    NotificationSettings.objects.create(user=other_account_manager, hourly_cap=1)
    when = at(MONDAY, 16, 30)  # 23:30 in Berlin
    with time_machine.travel(when, tick=False):
        escalation = make_escalation(owner_user=account_manager)
        _told(escalation, account_manager, other_account_manager)  # James already had his one email
        services.escalation_acknowledge(escalation=escalation, actor=executive, note="mine")
    [to_maria] = Delivery.objects.filter(action=NOTIFY_ACTION)
    assert to_maria.target == account_manager.email
    assert to_maria.next_attempt_at == dt.datetime.combine(
        MONDAY + dt.timedelta(days=1), dt.time(7), tzinfo=BERLIN
    )
    reasons = dict(SuppressedNotification.objects.values_list("target", "reason"))
    assert reasons == {account_manager.email: "quiet_hours", other_account_manager.email: "capped"}
    [rolled] = DigestItem.objects.filter(delivery__target=other_account_manager.email)
    assert rolled.kind == "capped" and rolled.event.kind == "acknowledged"


# --- the page and admin ----------------------------------------------------------------------------------


def test_a_person_sets_their_own_noise_settings_on_their_page(client, executive, settings):
    settings.FULCRUM = {**settings.FULCRUM, "EXECUTIVE_DIGEST": True, "QUIET_HOURS": ""}
    client.force_login(executive)
    url = reverse("notification-settings")
    page = client.get(url).content.decode()
    assert "one email every hour" in page  # the executive default, before any setting
    assert 'href="/account/notifications/"' in page  # reachable from the navigation

    bad = client.post(url, {"time_zone": "Mars/Olympus", "quiet_hours": "2-lat", "digest_minutes": "-5"})
    assert bad.status_code == 200 and not NotificationSettings.objects.exists()
    body = bad.content.decode()
    assert "is not a known time zone" in body and "write the start and end hours" in body

    saved = client.post(
        url, {"time_zone": "Europe/Berlin", "quiet_hours": "22-7", "digest_minutes": "1440", "hourly_cap": ""}
    )
    assert saved.status_code == 302
    row = NotificationSettings.objects.get(user=executive)
    assert (row.time_zone, row.quiet_hours, row.digest_minutes, row.hourly_cap) == (
        "Europe/Berlin",
        "22-7",
        1440,
        None,
    )
    assert AuditEntry.objects.filter(action="notification_settings.changed").count() == 1
    page = client.get(url).content.decode()
    assert "one email every day" in page and "22:00 to 7:00" in page and "Europe/Berlin" in page


def test_operators_see_and_edit_people_settings_in_admin(client, administrator, executive):
    NotificationSettings.objects.create(user=executive, quiet_hours="20-6")
    client.force_login(administrator)
    listing = client.get(reverse("admin:accounts_notificationsettings_changelist"))
    assert listing.status_code == 200 and "20-6" in listing.content.decode()
    row = NotificationSettings.objects.get()
    assert client.get(reverse("admin:accounts_notificationsettings_change", args=[row.pk])).status_code == 200
