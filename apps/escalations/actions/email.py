"""Escalation emails: to the account manager, the executives (rules and policy levels), a group or an address
(policy levels). Each reaches a person, so it passes the noise controls (``noise.py``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import smtplib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.template.loader import render_to_string

from apps.accounts.roles import EXECUTIVES
from apps.errors import Permanent, Transient
from apps.rules.engine.wording import conditions

from ..links import People, link_urls, people_of
from ..models import Delivery, Escalation, PolicyLevel
from .base import REGISTRY, Action

if TYPE_CHECKING:
    from ..preferences import Preferences


def explain_conditions(escalation: Escalation) -> list[dict[str, Any]]:
    """Each condition of the decision in plain words (the one formatter,
    ``apps/rules/engine/wording.py``): its label, what it
    means, the sentence, the value and threshold as shown, and whether it held."""
    return [
        {
            "fact": c.fact,
            "label": c.label,
            "meaning": c.meaning,
            "sentence": c.sentence,
            "actual": c.actual,
            "threshold": c.expected,
            "held": c.held,
            "result": {"true": "met", "false": "not met"}.get(c.result, "no data"),
        }
        for c in conditions(escalation.evidence)
    ]


def email_context(escalation: Escalation, recipient: str) -> dict:
    rows = explain_conditions(escalation)
    return {
        "escalation": escalation,
        "recipient": recipient,
        "url": f"{settings.SITE_URL}/escalations/{escalation.pk}/",
        "conditions": rows,
        "held": [row for row in rows if row["held"]],
        "also_checked": [row for row in rows if not row["held"]],
        "links": link_urls(escalation=escalation, recipient=recipient, people=_people()),
    }


def message_id(delivery: Delivery) -> str:
    """Stable across retries, so a receiver (or a test) can tell a repeat from a second message; the key
    itself holds ``:`` and ``@``, which a Message-ID's left part may not."""
    digest = hashlib.sha256(delivery.idempotency_key.encode()).hexdigest()[:24]
    return f"<{delivery.pk}.{digest}@fulcrum>"


# How an email that could not reach the mail server says so in its row's error: ``mail_return`` releases
# those rows at once when the server answers again.
UNREACHABLE = "mail server unreachable"


class MailServerUnreachable(Transient):
    """No SMTP connection could be opened (refused, timed out, no greeting), or the one open was lost
    mid-message: the server, not the email."""


def _unreachable(exc: BaseException) -> MailServerUnreachable | None:
    """``exc``, from opening an SMTP connection or sending over it, said as the server being unreachable
    (refused, timed out, no greeting or one other than 220, the connection lost); None for anything else
    (a refused login or recipient, a 4xx or 5xx reply: the email's own failure). smtplib's exceptions are
    ``OSError`` too, so they are told apart first."""
    if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPServerDisconnected) or (
        isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)
    ):
        return MailServerUnreachable(f"{UNREACHABLE}: {type(exc).__name__}: {exc}")
    return None


class MailSession:
    """One SMTP connection for a chunk of outbox rows (``delivery.deliveries_attempt``): a connection
    costs a handshake (connect, greeting, EHLO, QUIT) that is worth more than a message on a fast server.

    Opened at the first email, closed after any failure so the next email starts on a fresh one (a
    refused recipient leaves it usable, a dropped one does not, and telling them apart is not worth the
    risk). When it cannot be opened at all, the rest of the chunk fails with the same error at once
    instead of each row waiting out its own connect timeout: those rows are retried with the backoff.
    ``unreachable``: the server could not be reached, or a connection to it was lost, at least once
    (``mail_return`` then watches for its return).
    """

    def __init__(self) -> None:
        self.backend: BaseEmailBackend | None = None
        self.down: BaseException | None = None
        self.unreachable = False
        self.people: People = {}  # who each recipient is, for their signed links (``link_urls``)

    def send(self, message: EmailMessage) -> None:
        if self.down is not None:
            raise self.down
        if self.backend is None:
            backend = get_connection()
            try:
                backend.open()
            except Exception as exc:
                self.down = self._said(exc)
                if self.down is exc:
                    raise
                raise self.down from exc
            self.backend = backend
        message.connection = self.backend
        try:
            message.send()
        except BaseException as exc:
            self.close()
            said = self._said(exc)
            if said is exc:
                raise
            raise said from exc

    def _said(self, exc: BaseException) -> BaseException:
        unreachable = _unreachable(exc)
        if unreachable is None:
            return exc
        self.unreachable = True
        return unreachable

    def close(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            # A QUIT on a broken connection fails; the socket is closed either way.
            with suppress(Exception):
                backend.close()


_session: ContextVar[MailSession | None] = ContextVar("fulcrum_mail_session", default=None)


@contextmanager
def mail_session(rows: Iterable[Delivery] = ()) -> Iterator[MailSession]:
    """Emails sent inside share one SMTP connection (``MailSession``); outside, each opens its own.
    ``rows``: the chunk's outbox rows; the recipients of its escalation emails are looked up together for
    their links (a chunk of 20 emails to 11 people asked 22 queries one recipient at a time)."""
    session = MailSession()
    session.people = people_of(r.target for r in rows if isinstance(REGISTRY.get(r.action), EscalationEmail))
    token = _session.set(session)
    try:
        yield session
    finally:
        _session.reset(token)
        session.close()


def _people() -> People | None:
    session = _session.get()
    return session.people if session is not None else None


def send(message: EmailMessage) -> None:
    """Send over the current ``mail_session``'s connection, or over a connection of its own."""
    session = _session.get()
    if session is None:
        message.send()
    else:
        session.send(message)


def send_mail(delivery: Delivery, subject: str, text: str, html: str) -> dict:
    message = EmailMultiAlternatives(
        subject=subject.replace("\n", " ")[:250],
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[delivery.target],
        headers={
            "Message-ID": message_id(delivery),
            "X-Fulcrum-Escalation": str(delivery.escalation_id),
        },
    )
    message.attach_alternative(html, "text/html")
    deliver_message(message)
    return {"to": delivery.target}


def deliver_message(message: EmailMessage) -> None:
    """``send`` it, an SMTP failure said in the outbox's terms: a refused recipient or a 5xx reply is
    ``Permanent`` (the row is dead at once), a 4xx reply, a timeout or a lost connection ``Transient``."""
    try:
        send(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise Permanent(f"recipient refused: {exc.recipients}") from exc
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise Permanent(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise Transient(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
    except (TimeoutError, smtplib.SMTPException, ConnectionError) as exc:
        raise Transient(f"SMTP: {exc}") from exc


def group_addresses(**group: Any) -> list[str]:
    """The email addresses of a group's active members (``groups__name=…`` or ``groups__id=…``), sorted."""
    users = get_user_model().objects.filter(is_active=True, **group).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


class EscalationEmail(Action):
    """The escalation email, with its explanation and signed links."""

    reaches_person = True

    def perform(self, delivery: Delivery) -> dict[str, Any]:
        escalation = delivery.escalation
        context = email_context(escalation, delivery.target)
        subject = (
            f"[Fulcrum] {escalation.severity.title()}: {escalation.rule.name} — {escalation.subject_label}"
        )
        return send_mail(
            delivery,
            subject,
            render_to_string("escalations/email/escalation.txt", context),
            render_to_string("escalations/email/escalation.html", context),
        )


class EmailAccountManager(EscalationEmail):
    name = "email_account_manager"
    words = "Email to the account manager"
    rule_action = True
    policy_target = PolicyLevel.Target.ACCOUNT_MANAGER

    def targets(self, escalations: Sequence[Escalation]) -> list[list[str]]:
        found = []
        for escalation in escalations:
            client = escalation.client
            owner = client.owner if client else None
            found.append([owner.email] if owner and owner.email else [])
        return found


class EmailExecutives(EscalationEmail):
    name = "email_executives"
    words = "Email to the executives"
    rule_action = True
    policy_target = PolicyLevel.Target.EXECUTIVES

    def targets(self, escalations: Sequence[Escalation]) -> list[list[str]]:
        emails = group_addresses(groups__name=EXECUTIVES)
        return [list(emails) for _ in escalations]

    def digest_period(self, escalation: Escalation, person: Preferences, new: bool) -> dt.timedelta | None:
        """A policy may also batch its executives' emails (``digest_executives``)."""
        period = super().digest_period(escalation, person, new)
        if period is not None or not new or escalation.severity == Escalation.Severity.CRITICAL:
            return period
        snapshot = escalation.policy_snapshot or {}
        return person.rollup_period if snapshot.get("digest_executives") else None

    def bypasses_quiet_hours(self, escalation: Escalation) -> bool:
        return escalation.severity == Escalation.Severity.CRITICAL


class EmailGroup(EscalationEmail):
    name = "email_group"
    words = "Email to a group"
    policy_target = PolicyLevel.Target.GROUP

    def level_targets(self, escalation: Escalation, level: dict[str, Any]) -> list[str]:
        return group_addresses(groups__id=level["group_id"])


class EmailAddress(EscalationEmail):
    name = "email_address"
    words = "Email"
    policy_target = PolicyLevel.Target.ADDRESS

    def level_targets(self, escalation: Escalation, level: dict[str, Any]) -> list[str]:
        return [level["address"]] if level["address"] else []
