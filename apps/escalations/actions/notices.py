"""Emails about what happened rather than about a rule: notices of what someone did, and digests."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from apps.rules.engine.wording import why

from ..models import Delivery, DigestItem, Escalation, EscalationEvent
from .base import Action
from .email import deliver_message, send_mail

if TYPE_CHECKING:
    from ..preferences import Preferences

NOTIFY_ACTION = "notify_stakeholder"
DIGEST = "digest"


def notify_key(escalation_id: int, event_id: int, recipient: str) -> str:
    return f"esc{escalation_id}:{NOTIFY_ACTION}:ev{event_id}:{recipient}"[:120]


def notify_event_id(idempotency_key: str) -> int:
    return int(idempotency_key.split(":")[2].removeprefix("ev"))


class NotifyStakeholder(Action):
    """Tells the other recipients that someone acknowledged or closed an escalation."""

    name = NOTIFY_ACTION
    words = "Notice of what someone did"
    reaches_person = True

    def digest_period(self, escalation: Escalation, person: Preferences, new: bool) -> dt.timedelta | None:
        """Notices of what someone did are batched for a person with a digest, new escalation or not."""
        return person.digest

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        escalation = delivery.escalation
        event = EscalationEvent.objects.get(pk=notify_event_id(delivery.idempotency_key))
        context = {
            "escalation": escalation,
            "event": event,
            "outcome": escalation.get_outcome_display() if event.kind != "acknowledged" else "",
            "url": f"{settings.SITE_URL}/escalations/{escalation.pk}/",
        }
        subject = f"[Fulcrum] #{escalation.pk} {event.kind} by {event.actor} — {escalation.subject_label}"
        return send_mail(
            delivery,
            subject,
            render_to_string("escalations/email/notice.txt", context),
            render_to_string("escalations/email/notice.html", context),
        )


class Digest(Action):
    """One email with what a person's digest collected (``noise.py`` opens and fills it): it is what the
    noise controls produce, so it is never batched itself, yet counts against the hourly cap."""

    name = DIGEST
    words = "Digest email"
    reaches_person = True

    def digest_period(self, escalation: Escalation, person: Preferences, new: bool) -> dt.timedelta | None:
        return None

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        """New escalations (those the hourly cap held back among them, marked), and what people did
        (acknowledged, resolved ...)."""
        rows = list(
            DigestItem.objects.filter(delivery=delivery)
            .select_related(
                "escalation__rule",
                "escalation__client",
                f"escalation__{Escalation.EVIDENCE}",
                "event",
            )
            .order_by("added_at", "id")
        )
        seen: set[int] = set()
        escalations: list[tuple[Escalation, bool]] = []
        for item in rows:
            if item.event_id is None and item.escalation_id not in seen:
                seen.add(item.escalation_id)
                escalations.append((item.escalation, item.kind == DigestItem.Kind.CAPPED))
        escalations.sort(key=lambda pair: (Escalation.SEVERITY_RANK.get(pair[0].severity, 9), pair[0].pk))
        site = settings.SITE_URL
        context = {
            "recipient": delivery.target,
            "site_url": site,
            "items": [
                {
                    "escalation": e,
                    "why": why(e.evidence, e.summary),
                    "capped": capped,
                    "url": f"{site}/escalations/{e.pk}/",
                }
                for e, capped in escalations
            ],
            "capped": sum(1 for _, capped in escalations if capped),
            "notices": [
                {
                    "escalation": item.escalation,
                    "event": item.event,
                    "url": f"{site}/escalations/{item.escalation_id}/",
                }
                for item in rows
                if item.event is not None
            ],
        }
        count, updates = len(escalations), len(context["notices"])
        parts = [f"{count} new escalation{'s' if count != 1 else ''}"] if count or not updates else []
        if updates:
            parts.append(f"{updates} update{'s' if updates != 1 else ''}")
        message = EmailMultiAlternatives(
            subject=f"[Fulcrum] Digest: {', '.join(parts)}",
            body=render_to_string("escalations/email/digest.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[delivery.target],
            headers={"Message-ID": f"<digest-{delivery.pk}@fulcrum>", "X-Fulcrum-Digest": str(delivery.pk)},
        )
        message.attach_alternative(render_to_string("escalations/email/digest.html", context), "text/html")
        deliver_message(message)
        return {"to": delivery.target, "escalations": [e.pk for e, _ in escalations], "updates": updates}
