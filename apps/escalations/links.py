"""Signed email links: one action, one escalation, one recipient; expiring, tamper-evident, single-use.

A token is ``django.core.signing`` over ``{e: escalation, a: action, r: recipient}`` with its own salt and
a timestamp (``FULCRUM["EMAIL_LINK_MAX_AGE"]``). Each link in an email is its own token, for one action,
and using one voids that link only (SPEC "Actions"): every action a link can take is a one-way step of the
escalation's state machine, so the state says which links are spent and no table is needed —
"acknowledge" is spent once the escalation is acknowledged, and every link once it is closed (resolved,
dismissed, approved or rejected), by this link, another one, the page or the API. Acknowledging from an
email leaves its resolve and dismiss links working. A spent link's page says what happened, by whom and
when, from the escalation's event log. Re-fires and policy reminders change nothing a link depends on.

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
from django.utils import timezone
from django.utils.formats import date_format

from apps.accounts.roles import can_decide_approvals

from .models import Escalation, EscalationEvent

SALT = "fulcrum.escalations.email-link"
ACTIONS = ("acknowledge", "resolve", "dismiss", "approve", "reject")
# The events that spend a link: acknowledging spends "acknowledge"; closing spends every link.
ACKNOWLEDGED = ("acknowledged",)
CLOSED = ("resolved", "dismissed", "approved", "rejected")


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

    def __init__(self, message: str, *, event: EscalationEvent | None = None, title: str = "") -> None:
        super().__init__(message)
        self.event = event
        if title:
            self.title = title


@dataclass(frozen=True)
class Link:
    """A verified token: what it allows, on which escalation, for whom."""

    escalation: Escalation
    action: str
    recipient: str


def link_token(*, escalation: Escalation, action: str, recipient: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown link action {action!r}")
    payload = {"e": escalation.pk, "a": action, "r": recipient.lower()}
    return signing.dumps(payload, salt=SALT, compress=True)


def spending_event(escalation: Escalation, action: str) -> EscalationEvent | None:
    """The event that spent a link for ``action`` on this escalation, or None while the link is live."""
    kinds: tuple[str, ...]
    if not escalation.is_open:
        kinds = CLOSED
    elif action == "acknowledge" and escalation.status != Escalation.Status.OPEN:
        kinds = ACKNOWLEDGED
    else:
        return None
    return EscalationEvent.objects.filter(escalation_id=escalation.pk, kind__in=kinds).order_by("-id").first()


def _spent(escalation: Escalation, event: EscalationEvent | None) -> LinkUsed:
    if event is None:  # closed with no event to show (data from before the event log): say the state
        return LinkUsed(f"Escalation #{escalation.pk} is {escalation.status}; nothing was done.")
    when = date_format(timezone.localtime(event.created_at), "DATETIME_FORMAT")
    via = {"email": "from an email link", "web": "in Fulcrum", "api": "through the API"}.get(event.via, "")
    # The title says the state, not "you used this": the person who spent it may be someone else.
    return LinkUsed(
        f"{event.headline} by {event.actor_display} on {when} {via}. Nothing was done.".replace("  ", " "),
        event=event,
        title=f"Escalation #{escalation.pk} is already {escalation.status}",
    )


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
        pk, action, recipient = int(payload["e"]), str(payload["a"]), str(payload["r"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LinkInvalid("The link does not name an escalation and an action.") from exc
    if action not in ACTIONS:
        raise LinkInvalid(f"The link asks for {action!r}, which is not an action.")
    related = ("rule", "client__owner", "project", Escalation.EVIDENCE)  # the page says why
    escalation = Escalation.objects.select_related(*related).filter(pk=pk).first()
    if escalation is None:
        raise LinkInvalid("The escalation this link was for no longer exists.")
    link_spent_check(Link(escalation=escalation, action=action, recipient=recipient))
    return Link(escalation=escalation, action=action, recipient=recipient)


def link_spent_check(link: Link) -> None:
    """Raise LinkUsed, saying what happened, by whom and when, if the link's action is spent."""
    event = spending_event(link.escalation, link.action)
    if event is not None or not link.escalation.is_open:
        raise _spent(link.escalation, event)


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


def link_actions(
    escalation: Escalation, user: AbstractBaseUser | None, decider: bool | None = None
) -> list[str]:
    """The actions to offer this person by email, in display order (as the escalation page's buttons):
    what their role may do now (the escalation services' decision rights). ``decider``: whether the user
    may decide approvals, when the caller knows it already."""
    from .services import escalation_actions

    if user is None:
        return []
    if decider is None:
        decider = can_decide_approvals(user)
    return [a for a in escalation_actions(escalation, decider=decider) if a in ACTIONS]


# A recipient's address → their user and whether they may decide approvals.
People = dict[str, tuple[AbstractBaseUser | None, bool]]


def link_urls(
    *, escalation: Escalation, recipient: str, people: People | None = None
) -> list[tuple[str, str]]:
    """``(action, absolute URL)`` for each link this recipient gets in the escalation's email. ``people``:
    who each recipient is, kept across the emails of one chunk (``actions.email.MailSession``): a burst
    sends many emails to the same few people, and looking each one up costs two queries."""
    key = recipient.lower()
    if people is not None and key in people:
        user, decider = people[key]
    else:
        user = recipient_user(recipient)
        decider = user is not None and can_decide_approvals(user)
        if people is not None:
            people[key] = (user, decider)
    urls = []
    for action in link_actions(escalation, user, decider):
        token = link_token(escalation=escalation, action=action, recipient=recipient)
        urls.append((action, settings.SITE_URL.rstrip("/") + reverse("escalation-link", args=[token])))
    return urls
