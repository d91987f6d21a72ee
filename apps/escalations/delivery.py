"""Sending one outbox row: claim it, perform the action, record the result.

A claim is a conditional UPDATE (pending/failed and due, or sending with an expired claim), so two
workers never send the same row at once and a worker killed mid-send leaves a row that is re-claimed
when its claim expires. Only timeouts, connection errors, 5xx and 429 are retried, with exponential
backoff and jitter; anything else, or too many attempts, makes the row dead (listed in admin).
"""

from __future__ import annotations

import datetime as dt
import random
import smtplib
from typing import Any

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone

from .models import Delivery, Escalation

CLAIM_FOR = dt.timedelta(minutes=5)


class PermanentFailure(Exception):
    """Retrying will not help (a 4xx from upstream, a refused recipient)."""


def _due(now: dt.datetime) -> Q:
    waiting = Q(state__in=[Delivery.State.PENDING, Delivery.State.FAILED], next_attempt_at__lte=now)
    abandoned = Q(state=Delivery.State.SENDING, claimed_until__lt=now)
    return waiting | abandoned


def delivery_claim(pk: int, now: dt.datetime | None = None) -> Delivery | None:
    now = now or timezone.now()
    claimed = Delivery.objects.filter(_due(now), pk=pk).update(
        state=Delivery.State.SENDING, attempts=F("attempts") + 1, claimed_until=now + CLAIM_FOR
    )
    if not claimed:
        return None
    return Delivery.objects.select_related(
        "escalation__client__owner", "escalation__project", "escalation__rule"
    ).get(pk=pk)


def due_delivery_ids(limit: int = 200, now: dt.datetime | None = None) -> list[int]:
    return list(
        Delivery.objects.filter(_due(now or timezone.now()))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def backoff(attempts: int) -> dt.timedelta:
    """Full-jitter exponential backoff: up to 30 s × 2^(attempts-1), capped at an hour."""
    ceiling = min(3600.0, 30.0 * 2 ** max(0, attempts - 1))
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def delivery_attempt(pk: int) -> str:
    """Try one delivery now if it is due and unclaimed. Returns the resulting state."""
    delivery = delivery_claim(pk)
    if delivery is None:
        return "not-due"
    try:
        response = perform(delivery)
    except PermanentFailure as exc:
        return _finish(delivery, Delivery.State.DEAD, error=str(exc))
    except (OSError, smtplib.SMTPException, requests.RequestException) as exc:
        if delivery.attempts >= settings.FULCRUM["ACTION_MAX_ATTEMPTS"]:
            return _finish(
                delivery, Delivery.State.DEAD, error=f"gave up after {delivery.attempts} attempts: {exc}"
            )
        return _finish(delivery, Delivery.State.FAILED, error=f"{type(exc).__name__}: {exc}")
    return _finish(delivery, Delivery.State.DELIVERED, response=response)


def _finish(delivery: Delivery, state: str, *, error: str = "", response: dict | None = None) -> str:
    now = timezone.now()
    fields: dict[str, Any] = {"state": state, "claimed_until": None, "last_error": error[:2000]}
    if state == Delivery.State.DELIVERED:
        fields.update(delivered_at=now, response=response or {})
    elif state == Delivery.State.FAILED:
        fields["next_attempt_at"] = now + backoff(delivery.attempts)
    # Only the claim holder may finish: a row re-claimed after an expired claim belongs to its new owner.
    Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENDING, attempts=delivery.attempts).update(
        **fields
    )
    return state


def perform(delivery: Delivery) -> dict:
    action = delivery.action
    if action in ("email_account_manager", "email_executives"):
        return send_escalation_email(delivery)
    if action == "flag_dashboard":
        return {"flagged": True}
    if action in ("note_crm", "note_accounting"):
        return write_note(delivery)
    raise PermanentFailure(f"unknown action {action!r}")


def email_context(escalation: Escalation, recipient: str) -> dict:
    return {
        "escalation": escalation,
        "recipient": recipient,
        "url": f"{settings.SITE_URL}/escalations/{escalation.pk}/",
        "explanation": [e for e in escalation.evidence.get("explanation", []) if e.get("fact")],
    }


def send_escalation_email(delivery: Delivery) -> dict:
    escalation = delivery.escalation
    context = email_context(escalation, delivery.target)
    subject = f"[Fulcrum] {escalation.severity.title()}: {escalation.rule.name} — {escalation.subject_label}"
    message = EmailMultiAlternatives(
        subject=subject.replace("\n", " ")[:250],
        body=render_to_string("escalations/email/escalation.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[delivery.target],
        headers={
            "Message-ID": f"<{delivery.idempotency_key}@fulcrum>",
            "X-Fulcrum-Escalation": str(escalation.pk),
        },
    )
    message.attach_alternative(render_to_string("escalations/email/escalation.html", context), "text/html")
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentFailure(f"recipient refused: {exc.recipients}") from exc
    except (TimeoutError, smtplib.SMTPException, ConnectionError) as exc:
        raise OSError(f"SMTP: {exc}") from exc
    return {"to": delivery.target}


def write_note(delivery: Delivery) -> dict:
    from apps.connectors.http import UpstreamError
    from apps.connectors.kinds import get_kind
    from apps.connectors.models import Connection

    connection_id, _, record_id = delivery.target.partition(":")
    connection = Connection.objects.get(pk=int(connection_id))
    escalation = delivery.escalation
    text = (
        f"Fulcrum escalation #{escalation.pk} ({escalation.severity}, route {escalation.route}): "
        f"{escalation.rule.name} — {escalation.subject_label}. Why: {escalation.summary} "
        f"{settings.SITE_URL}/escalations/{escalation.pk}/"
    )
    kind = get_kind(connection)
    try:
        result = kind.write_note(record_id, text, idempotency_key=delivery.idempotency_key)
    except UpstreamError as exc:
        if exc.retryable:  # timeouts, unreachable, 5xx, 429: try again later
            raise
        raise PermanentFailure(f"upstream refused the note: HTTP {exc.status}") from exc
    return result if isinstance(result, dict) else {"result": str(result)}
