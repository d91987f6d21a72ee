"""Signed email links: one action, one escalation, one recipient; expiring, tamper-evident, single-use.

A token is ``django.core.signing`` over ``{e: escalation, a: action, r: recipient, s: state}`` with its own
salt and a timestamp (``FULCRUM["EMAIL_LINK_MAX_AGE"]``). Single use needs no table: like Django's
``PasswordResetTokenGenerator``, ``s`` is a keyed hash of the escalation's actionable state — its status
and the id of its latest transition by a person — so the token dies as soon as anyone acts on it. (Not
``last_fired_at``: a re-fire must not kill the links in an email the person has not opened yet.)

GET on a link only shows a confirmation page (mail scanners prefetch links); only POST acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac

from apps.accounts.roles import can_decide_approvals

from .models import Escalation, EscalationEvent

SALT = "fulcrum.escalations.email-link"
ACTIONS = ("acknowledge", "resolve", "dismiss", "approve", "reject")
# Events that change what a link may do; policy reminders, deliveries and re-fires do not.
TRANSITIONS = ("acknowledged", "resolved", "dismissed")


class LinkError(Exception):
    """A link that cannot be used; ``status`` is the HTTP answer, ``title`` and the message the page."""

    status = 400
    title = "This link is not valid"


class LinkInvalid(LinkError):
    status = 400
    title = "This link is not valid"


class LinkExpired(LinkError):
    status = 410
    title = "This link has expired"


class LinkUsed(LinkError):
    status = 409
    title = "This link has already been used"


@dataclass(frozen=True)
class Link:
    """A verified token: what it allows, on which escalation, for whom."""

    escalation: Escalation
    action: str
    recipient: str


def state_hash(escalation: Escalation) -> str:
    last = (
        EscalationEvent.objects.filter(escalation_id=escalation.pk, kind__in=TRANSITIONS)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    value = f"{escalation.pk}:{escalation.status}:{last or 0}"
    return salted_hmac(SALT, value, algorithm="sha256").hexdigest()[:20]


def link_token(*, escalation: Escalation, action: str, recipient: str, state: str | None = None) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown link action {action!r}")
    payload = {
        "e": escalation.pk,
        "a": action,
        "r": recipient.lower(),
        "s": state or state_hash(escalation),
    }
    return signing.dumps(payload, salt=SALT, compress=True)


def link_check(token: str) -> Link:
    """The link's escalation, action and recipient; LinkInvalid / LinkExpired / LinkUsed otherwise."""
    max_age = settings.FULCRUM["EMAIL_LINK_MAX_AGE"]
    try:
        payload: dict[str, Any] = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise LinkExpired(
            f"Links in Fulcrum emails work for {max_age.days} days. Open the escalation in Fulcrum instead."
        ) from exc
    except signing.BadSignature as exc:
        raise LinkInvalid("The link was changed or cut off. Copy the whole link from the email.") from exc
    try:
        pk, action, recipient, state = (
            int(payload["e"]),
            str(payload["a"]),
            str(payload["r"]),
            str(payload["s"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LinkInvalid("The link does not name an escalation and an action.") from exc
    if action not in ACTIONS:
        raise LinkInvalid(f"The link asks for {action!r}, which is not an action.")
    escalation = Escalation.objects.select_related("rule", "client__owner", "project").filter(pk=pk).first()
    if escalation is None:
        raise LinkInvalid("The escalation this link was for no longer exists.")
    if not constant_time_compare(state, state_hash(escalation)):
        raise LinkUsed(
            f"Escalation #{escalation.pk} changed since this email was sent (it is now {escalation.status}); "
            "nothing was done. Open it in Fulcrum to see who acted."
        )
    return Link(escalation=escalation, action=action, recipient=recipient)


def recipient_user(recipient: str) -> AbstractBaseUser | None:
    """The active Fulcrum user behind an email address: a unique user with it, or the CRM owner's user."""
    from apps.entities.models import CrmOwner

    users = list(get_user_model().objects.filter(email__iexact=recipient, is_active=True)[:2])
    if len(users) == 1:
        return users[0]
    if users:
        return None  # two accounts share the address: acting as either would be a guess
    owner = (
        CrmOwner.objects.filter(email__iexact=recipient, user__is_active=True).select_related("user").first()
    )
    return owner.user if owner else None


def link_actions(escalation: Escalation, user: AbstractBaseUser | None) -> list[str]:
    """The actions to offer this person by email, in display order (as the escalation page's buttons)."""
    if user is None or not escalation.is_open:
        return []
    actions = []
    if (
        can_decide_approvals(user)
        and escalation.route == Escalation.Route.EXECUTIVE
        and escalation.subject_type == "change_order"
    ):
        actions += ["approve", "reject"]
    if escalation.status == Escalation.Status.OPEN:
        actions.append("acknowledge")
    return [*actions, "resolve", "dismiss"]


def link_urls(*, escalation: Escalation, recipient: str) -> list[tuple[str, str]]:
    """``(action, absolute URL)`` for each link this recipient gets in the escalation's email."""
    user = recipient_user(recipient)
    state = state_hash(escalation)
    urls = []
    for action in link_actions(escalation, user):
        token = link_token(escalation=escalation, action=action, recipient=recipient, state=state)
        urls.append((action, settings.SITE_URL.rstrip("/") + reverse("escalation-link", args=[token])))
    return urls
