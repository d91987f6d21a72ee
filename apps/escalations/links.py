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

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from apps.accounts.roles import DECIDERS, can_decide_approvals

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


# A recipient's address → their user and whether they may decide approvals.
People = dict[str, tuple[AbstractBaseUser | None, bool]]


def recipient_user(recipient: str) -> AbstractBaseUser | None:
    """The active Fulcrum user behind an email address: a unique user with it, or the CRM owner's user."""
    return _users_of([recipient]).get(recipient.lower())


def _users_of(recipients: Iterable[str]) -> dict[str, AbstractBaseUser | None]:
    """``recipient_user`` for each of these addresses (keyed lowercased), in one or two queries whatever
    their number: the active users with any of them, then the CRM owners of those that have none."""
    from apps.entities.models import CrmOwner

    wanted = {recipient.lower(): recipient for recipient in recipients}
    if not wanted:
        return {}
    users: dict[str, list[AbstractBaseUser]] = {}
    active = get_user_model().objects.filter(is_active=True)
    for user in active.filter(_any_address("email", wanted.values())).order_by("pk"):
        users.setdefault(user.email.lower(), []).append(user)
    # Two accounts share the address: acting as either would be a guess.
    found: dict[str, AbstractBaseUser | None] = {
        key: (users[key][0] if len(users[key]) == 1 else None) for key in wanted if key in users
    }
    missing = [address for key, address in wanted.items() if key not in users]
    if missing:
        owners = CrmOwner.objects.filter(_any_address("email", missing), user__is_active=True)
        for owner in owners.select_related("user").order_by("name", "pk"):
            found.setdefault(owner.email.lower(), owner.user)
    return {key: found.get(key) for key in wanted}


def _any_address(field: str, addresses: Iterable[str]) -> Q:
    """``field`` equal to any of these addresses, ignoring case as ``iexact`` does."""
    return reduce(operator.or_, (Q(**{f"{field}__iexact": address}) for address in addresses))


def people_of(recipients: Iterable[str]) -> People:
    """Who each of these addresses is (``recipient_user``) and whether they may decide approvals, in two to
    three queries whatever their number: a chunk of outbox emails looks its recipients up together."""
    users = _users_of(recipients)
    known = {user.pk for user in users.values() if user is not None}
    deciders: set[int] = set()
    if known:
        who = get_user_model().objects.filter(pk__in=known)
        deciders = set(
            who.filter(Q(is_superuser=True) | Q(groups__name__in=DECIDERS)).values_list("pk", flat=True)
        )
    return {key: (user, user is not None and user.pk in deciders) for key, user in users.items()}


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


def link_urls(
    *, escalation: Escalation, recipient: str, people: People | None = None
) -> list[tuple[str, str]]:
    """``(action, absolute URL)`` for each link this recipient gets in the escalation's email. ``people``:
    who each recipient is, kept across the emails of one chunk (``actions.email.MailSession``, which looks
    the chunk's recipients up together): a burst sends many emails to the same few people."""
    key = recipient.lower()
    if people is None:
        people = {}
    if key not in people:
        people.update(people_of([recipient]))
    user, decider = people[key]
    urls = []
    for action in link_actions(escalation, user, decider):
        token = link_token(escalation=escalation, action=action, recipient=recipient)
        urls.append((action, settings.SITE_URL.rstrip("/") + reverse("escalation-link", args=[token])))
    return urls
