from __future__ import annotations

import datetime as dt
import smtplib

import pytest
from django.core import mail
from django.utils import timezone

from apps.escalations.delivery import delivery_attempt, delivery_claim
from apps.escalations.models import Delivery

from .helpers import make_escalation

pytestmark = pytest.mark.django_db


def _delivery(escalation, action="email_account_manager", target="maria@fulcrum-demo.test", **extra):
    now = timezone.now()
    return Delivery.objects.create(
        escalation=escalation,
        action=action,
        target=target,
        idempotency_key=f"k:{action}:{target}",
        next_attempt_at=now,
        created_at=now,
        **extra,
    )


def test_email_is_sent_with_the_explanation_and_link(settings):
    settings.SITE_URL = "https://fulcrum.example"
    escalation = make_escalation(client_name="<script>alert(1)</script> Builders")
    delivery = _delivery(escalation)
    assert delivery_attempt(delivery.pk) == "delivered"
    [message] = mail.outbox
    assert message.to == ["maria@fulcrum-demo.test"]
    assert f"https://fulcrum.example/escalations/{escalation.pk}/" in message.body
    assert "change_order.amount is 60,000.00 USD" in message.body
    html = message.alternatives[0][0]
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.attempts == 1 and delivery.delivered_at


def test_a_delivered_row_is_never_sent_again():
    delivery = _delivery(make_escalation())
    delivery_attempt(delivery.pk)
    assert delivery_attempt(delivery.pk) == "not-due"
    assert len(mail.outbox) == 1


def test_smtp_down_is_retried_later_then_delivered(monkeypatch):
    delivery = _delivery(make_escalation())

    def down(*args, **kwargs):
        raise smtplib.SMTPServerDisconnected("connection refused")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", down)
    assert delivery_attempt(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.next_attempt_at > timezone.now() and "SMTP" in delivery.last_error
    assert delivery_attempt(delivery.pk) == "not-due"  # backing off
    monkeypatch.undo()
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert delivery_attempt(delivery.pk) == "delivered"
    assert len(mail.outbox) == 1


def test_too_many_failures_make_the_row_dead(monkeypatch, settings):
    settings.FULCRUM = {**settings.FULCRUM, "ACTION_MAX_ATTEMPTS": 2}
    delivery = _delivery(make_escalation())
    monkeypatch.setattr(
        "django.core.mail.EmailMessage.send", lambda *a, **k: (_ for _ in ()).throw(OSError("down"))
    )
    assert delivery_attempt(delivery.pk) == "failed"
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert delivery_attempt(delivery.pk) == "dead"
    delivery.refresh_from_db()
    assert "gave up after 2 attempts" in delivery.last_error


def test_a_refused_recipient_is_dead_at_once(monkeypatch):
    delivery = _delivery(make_escalation())

    def refused(*args, **kwargs):
        raise smtplib.SMTPRecipientsRefused({"maria@fulcrum-demo.test": (550, b"no such user")})

    monkeypatch.setattr("django.core.mail.EmailMessage.send", refused)
    assert delivery_attempt(delivery.pk) == "dead"


def test_a_claim_excludes_other_workers_until_it_expires():
    delivery = _delivery(make_escalation())
    assert delivery_claim(delivery.pk) is not None
    assert delivery_claim(delivery.pk) is None  # another worker
    # The first worker died mid-send: after the claim expires the row is claimable again.
    later = timezone.now() + dt.timedelta(minutes=6)
    reclaimed = delivery_claim(delivery.pk, now=later)
    assert reclaimed is not None and reclaimed.attempts == 2


def test_flag_dashboard_is_recorded_as_delivered():
    delivery = _delivery(make_escalation(), action="flag_dashboard", target="dashboard")
    assert delivery_attempt(delivery.pk) == "delivered"
