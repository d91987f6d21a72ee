"""Sending one outbox row: claim it, perform the action, record the result.

A claim is a conditional UPDATE (pending/failed and due, or sending with an expired claim), so two
workers never send the same row at once and a worker killed mid-send leaves a row that is re-claimed
when its claim expires; the far side drops the repeat by the row's idempotency key.

Only ``Transient`` failures (``apps.errors``: timeouts, connection errors, 5xx and 429) are retried, after
the project's one backoff (full jitter, ``ACTION_BACKOFF_BASE``/``_CAP``, a ``Retry-After`` winning when
longer); a ``Permanent`` one (a 4xx, a refused recipient, an unsafe URL) makes the row dead at once with the
error, as do too many attempts. Upstream writes are retried here and only
here: the HTTP client sends a write once unless it never left (``apps.connectors.http``), so a lost answer
costs one outbox attempt and the next one looks before writing (``outcome_may_exist``). Dead rows are the
dead-letter list in admin; :func:`delivery_replay` queues one again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import smtplib
from collections.abc import Callable
from typing import Any

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone

from apps.audit.services import Actor, audit_record
from apps.connectors.http import UpstreamPermanent
from apps.connectors.kinds import get_kind
from apps.connectors.models import Connection
from apps.errors import Permanent, Transient, configured_backoff
from apps.rules.engine.wording import conditions, why

from .models import Delivery, DigestItem, Escalation, EscalationEvent

logger = logging.getLogger(__name__)

EMAIL_ACTIONS = ("email_account_manager", "email_executives")
NOTIFY_ACTION = "notify_stakeholder"
WRITEBACK_ACTION = "approval_writeback"
# Actions that call a vendor or a customer's endpoint go to the ``writeback`` queue (its own worker pool in
# the Procfile), everything else (emails, notices, digests) to ``delivery``: a slow or rate-limited
# upstream never holds the slot an email needs.
UPSTREAM_ACTIONS = frozenset({"note_crm", "note_accounting", "escalate_pm", WRITEBACK_ACTION, "webhook"})


def queue_for(action: str) -> str:
    return "writeback" if action in UPSTREAM_ACTIONS else "delivery"


Performer = Callable[[Delivery], dict[str, Any]]
PERFORMERS: dict[str, Performer] = {}


def performs(*actions: str) -> Callable[[Performer], Performer]:
    """Register the function that delivers these actions (other apps may add their own)."""

    def register(func: Performer) -> Performer:
        for action in actions:
            PERFORMERS[action] = func
        return func

    return register


def _conf(name: str, default: float) -> float:
    return float(settings.FULCRUM.get(name, default))


def claim_for() -> dt.timedelta:
    # Longer than the slowest attempt (HTTP timeout × retries, SMTP timeout), so a live send is never
    # re-claimed; a killed worker's row waits this long for the sweeper.
    return dt.timedelta(seconds=_conf("DELIVERY_CLAIM_SECONDS", 300))


def _due(now: dt.datetime) -> Q:
    waiting = Q(state__in=[Delivery.State.PENDING, Delivery.State.FAILED], next_attempt_at__lte=now)
    abandoned = Q(state=Delivery.State.SENDING, claimed_until__lt=now)
    return waiting | abandoned


def delivery_claim(pk: int, now: dt.datetime | None = None) -> Delivery | None:
    now = now or timezone.now()
    claimed = Delivery.objects.filter(_due(now), pk=pk).update(
        state=Delivery.State.SENDING, attempts=F("attempts") + 1, claimed_until=now + claim_for()
    )
    if not claimed:
        return None
    return Delivery.objects.select_related(
        "escalation__client__owner", "escalation__project__source", "escalation__rule"
    ).get(pk=pk)


def due_delivery_ids(limit: int = 200, now: dt.datetime | None = None) -> list[int]:
    return list(
        Delivery.objects.filter(_due(now or timezone.now()))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def delivery_attempt(pk: int) -> str:
    """Try one delivery now if it is due and unclaimed. Returns the resulting state."""
    from apps.connectors import ratelimit

    delivery = delivery_claim(pk)
    if delivery is None:
        return "not-due"
    try:
        # A vendor's spent budget raises instead of sleeping in this worker's slot (``_defer``).
        with ratelimit.deferring():
            response = perform(delivery)
    except Permanent as exc:
        return _finish(delivery, Delivery.State.DEAD, error=str(exc))
    except ratelimit.RateBudgetDeferred as exc:
        return _defer(delivery, float(exc.retry_after or 0.0))
    except Transient as exc:
        return _failed(delivery, str(exc), retry_after=exc.retry_after)
    except (OSError, smtplib.SMTPException, requests.RequestException) as exc:
        return _failed(delivery, f"{type(exc).__name__}: {exc}")
    return _finish(delivery, Delivery.State.DELIVERED, response=response)


def _defer(delivery: Delivery, wait: float) -> str:
    """The vendor's shared budget is spent: nothing was sent, so the attempt is given back (attempts count
    failures, and a busy budget is not one) and the row is due again when the budget refills. The error of
    an earlier real attempt is kept: ``outcome_may_exist`` reads it."""
    due = timezone.now() + dt.timedelta(seconds=wait)
    deferred = Delivery.objects.filter(
        pk=delivery.pk, state=Delivery.State.SENDING, attempts=delivery.attempts
    ).update(
        state=Delivery.State.PENDING, attempts=F("attempts") - 1, claimed_until=None, next_attempt_at=due
    )
    if deferred:
        _schedule_retry(delivery.pk, dt.timedelta(seconds=wait), queue=queue_for(delivery.action))
    return "deferred"


def _failed(delivery: Delivery, error: str, retry_after: float | None = None) -> str:
    if delivery.attempts >= int(settings.FULCRUM["ACTION_MAX_ATTEMPTS"]):
        return _finish(
            delivery, Delivery.State.DEAD, error=f"gave up after {delivery.attempts} attempts: {error}"
        )
    return _finish(delivery, Delivery.State.FAILED, error=error, retry_after=retry_after)


def _finish(
    delivery: Delivery,
    state: str,
    *,
    error: str = "",
    response: dict | None = None,
    retry_after: float | None = None,
) -> str:
    now = timezone.now()
    fields: dict[str, Any] = {"state": state, "claimed_until": None, "last_error": error[:2000]}
    wait = None
    if state == Delivery.State.DELIVERED:
        fields.update(delivered_at=now, response=response or {})
    elif state == Delivery.State.FAILED:
        # The retry after attempt 1 waits up to ACTION_BACKOFF_BASE; a day is the longest advice heeded.
        retry = delivery.attempts - 1
        seconds = configured_backoff("ACTION", retry, retry_after=retry_after, longest=86_400.0)
        wait = dt.timedelta(seconds=seconds)
        fields["next_attempt_at"] = now + wait
    # Only the claim holder may finish: a row re-claimed after an expired claim belongs to its new owner.
    finished = Delivery.objects.filter(
        pk=delivery.pk, state=Delivery.State.SENDING, attempts=delivery.attempts
    ).update(**fields)
    if finished and wait is not None:
        _schedule_retry(delivery.pk, wait, queue=queue_for(delivery.action))
    return state


def _schedule_retry(pk: int, wait: dt.timedelta, *, queue: str = "delivery") -> None:
    """Inside a worker, put the retry on the broker for when it is due; beat's sweeper stays the safety
    net (a lost or early message only finds the row not yet due)."""
    from celery import current_task

    if not current_task or not current_task.request.id:
        return
    from .tasks import deliver

    try:
        deliver.apply_async((pk,), countdown=wait.total_seconds() + 0.1, queue=queue)
    except Exception:  # the broker is down: the row is recorded as failed, and the sweeper will find it
        logger.warning("could not schedule the retry of delivery %s; beat's sweeper will", pk, exc_info=True)


def perform(delivery: Delivery) -> dict:
    func = PERFORMERS.get(delivery.action)
    if func is None:
        raise Permanent(f"unknown action {delivery.action!r}")
    return func(delivery)


@performs("flag_dashboard")
def flag_dashboard(delivery: Delivery) -> dict:
    return {"flagged": True}


# ---- email --------------------------------------------------------------------------------------------


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
    from .links import link_urls

    rows = explain_conditions(escalation)
    return {
        "escalation": escalation,
        "recipient": recipient,
        "url": f"{settings.SITE_URL}/escalations/{escalation.pk}/",
        "conditions": rows,
        "held": [row for row in rows if row["held"]],
        "also_checked": [row for row in rows if not row["held"]],
        "links": link_urls(escalation=escalation, recipient=recipient),
    }


def message_id(delivery: Delivery) -> str:
    """Stable across retries, so a receiver (or a test) can tell a repeat from a second message; the key
    itself holds ``:`` and ``@``, which a Message-ID's left part may not."""
    digest = hashlib.sha256(delivery.idempotency_key.encode()).hexdigest()[:24]
    return f"<{delivery.pk}.{digest}@fulcrum>"


def _send_mail(delivery: Delivery, subject: str, text: str, html: str) -> dict:
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
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        raise Permanent(f"recipient refused: {exc.recipients}") from exc
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise Permanent(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise Transient(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
    except (TimeoutError, smtplib.SMTPException, ConnectionError) as exc:
        raise Transient(f"SMTP: {exc}") from exc
    return {"to": delivery.target}


@performs(*EMAIL_ACTIONS)
def send_escalation_email(delivery: Delivery) -> dict:
    escalation = delivery.escalation
    context = email_context(escalation, delivery.target)
    subject = f"[Fulcrum] {escalation.severity.title()}: {escalation.rule.name} — {escalation.subject_label}"
    return _send_mail(
        delivery,
        subject,
        render_to_string("escalations/email/escalation.txt", context),
        render_to_string("escalations/email/escalation.html", context),
    )


# ---- stakeholder notices ------------------------------------------------------------------------------


def notify_key(escalation_id: int, event_id: int, recipient: str) -> str:
    return f"esc{escalation_id}:{NOTIFY_ACTION}:ev{event_id}:{recipient}"[:120]


def _notify_event_id(idempotency_key: str) -> int:
    return int(idempotency_key.split(":")[2].removeprefix("ev"))


@performs(NOTIFY_ACTION)
def send_stakeholder_notice(delivery: Delivery) -> dict:
    escalation = delivery.escalation
    event = EscalationEvent.objects.get(pk=_notify_event_id(delivery.idempotency_key))
    context = {
        "escalation": escalation,
        "event": event,
        "outcome": escalation.get_outcome_display() if event.kind != "acknowledged" else "",
        "url": f"{settings.SITE_URL}/escalations/{escalation.pk}/",
    }
    subject = f"[Fulcrum] #{escalation.pk} {event.kind} by {event.actor} — {escalation.subject_label}"
    return _send_mail(
        delivery,
        subject,
        render_to_string("escalations/email/notice.txt", context),
        render_to_string("escalations/email/notice.html", context),
    )


# ---- upstream write-backs ------------------------------------------------------------------------------


def _upstream(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run an upstream call. A transient failure (timeouts, unreachable, 5xx, 429) passes as it is, with
    the vendor's Retry-After or rate-limit reset; a refusal is recorded with its status and body."""
    try:
        return call()
    except UpstreamPermanent as exc:
        raise Permanent(f"upstream refused: HTTP {exc.status}: {exc.body or exc}") from exc


def _note_text(escalation: Escalation) -> str:
    return (
        f"Fulcrum escalation #{escalation.pk} ({escalation.severity}, route {escalation.route}): "
        f"{escalation.rule.name} — {escalation.subject_label}. "
        f"Why: {why(escalation.evidence, escalation.summary)}. "
        f"{settings.SITE_URL}/escalations/{escalation.pk}/"
    )


def outcome_may_exist(delivery: Delivery) -> bool:
    """Whether an earlier attempt of this row may already have acted upstream, so a write without an
    idempotency key must look for its result first: any attempt after the first (the HTTP client never
    resends a write whose outcome is unknown, so the first retry after a cut 2xx is the outbox's), and the
    first attempt of a replayed row, which keeps its last error while its count starts again."""
    return delivery.attempts > 1 or bool(delivery.last_error)


@performs("note_crm", "note_accounting")
def write_note(delivery: Delivery) -> dict:
    connection_id, _, record_id = delivery.target.partition(":")
    connection = Connection.objects.get(pk=int(connection_id))
    kind = get_kind(connection)
    text = _note_text(delivery.escalation)
    result = _upstream(
        lambda: kind.write_note(
            record_id, text, idempotency_key=delivery.idempotency_key, retry=outcome_may_exist(delivery)
        )
    )
    return result if isinstance(result, dict) else {"result": str(result)}


@performs("escalate_pm")
def escalate_pm(delivery: Delivery) -> dict:
    from .outbound import procore_create_rfi

    escalation = delivery.escalation
    return _upstream(
        lambda: procore_create_rfi(
            escalation=escalation,
            target=delivery.target,
            idempotency_key=delivery.idempotency_key,
            text=_note_text(escalation),
        )
    )


@performs(WRITEBACK_ACTION)
def write_back_decision(delivery: Delivery) -> dict:
    from .outbound import procore_set_change_order_status

    outcome = delivery.escalation.outcome
    if outcome not in (Escalation.Outcome.APPROVED, Escalation.Outcome.REJECTED):
        raise Permanent(f"escalation outcome is {outcome!r}, not an approval decision")
    return _upstream(
        lambda: procore_set_change_order_status(
            target=delivery.target, status=str(outcome), idempotency_key=delivery.idempotency_key
        )
    )


@performs("webhook")
def send_webhook(delivery: Delivery) -> dict:
    from .outbound import webhook_send

    # An unsafe destination or a refusal is ``Permanent``, a timeout, 5xx or 429 ``Transient``.
    return webhook_send(
        escalation=delivery.escalation,
        endpoint_name=delivery.target,
        idempotency_key=delivery.idempotency_key,
    )


# ---- queueing and replay -------------------------------------------------------------------------------


# Publishing one task costs about a millisecond; a bulk opening queues a few rows per escalation. Past
# this many rows, one message carries this many (``deliver_many`` sends them in turn in one worker, one
# row's failure not stopping the others); up to it, each row is its own task, sent in parallel.
DISPATCH_CHUNK = 64


def deliveries_dispatch(ids: list[int]) -> None:
    """Hand outbox rows to workers (call after commit), emails and write-backs on their own queues
    (``queue_for``). A lost message delays a row, never loses it: beat's sweeper sends every due row."""
    from .tasks import deliver, deliver_many

    by_queue: dict[str, list[int]] = {}
    for pk, action in Delivery.objects.filter(pk__in=ids).order_by("pk").values_list("pk", "action"):
        by_queue.setdefault(queue_for(action), []).append(pk)
    for queue, pks in by_queue.items():
        if len(pks) <= DISPATCH_CHUNK:
            for pk in pks:
                deliver.apply_async((pk,), queue=queue)
        else:
            for start in range(0, len(pks), DISPATCH_CHUNK):
                deliver_many.apply_async((pks[start : start + DISPATCH_CHUNK],), queue=queue)


def deliveries_queue(deliveries: list[Delivery]) -> list[int]:
    """Insert outbox rows (an existing idempotency key is left alone) and send them after commit."""
    Delivery.objects.bulk_create(deliveries, ignore_conflicts=True)
    keys = [d.idempotency_key for d in deliveries]
    ids = list(
        Delivery.objects.filter(idempotency_key__in=keys, state=Delivery.State.PENDING).values_list(
            "pk", flat=True
        )
    )
    if ids:
        transaction.on_commit(lambda: deliveries_dispatch(ids))
    return ids


@transaction.atomic
def delivery_replay(*, delivery: Delivery, actor: Actor) -> bool:
    """Queue a dead (or failed) delivery again from a fresh attempt count; False if it was neither."""
    replayed = Delivery.objects.filter(
        pk=delivery.pk, state__in=[Delivery.State.DEAD, Delivery.State.FAILED]
    ).update(state=Delivery.State.PENDING, attempts=0, next_attempt_at=timezone.now(), claimed_until=None)
    if not replayed:
        return False
    audit_record(
        action="delivery.replayed",
        actor=actor,
        object_type="delivery",
        object_id=delivery.pk,
        data={
            "escalation": delivery.escalation_id,
            "action": delivery.action,
            "target": delivery.target,
            "last_error": delivery.last_error[:500],
        },
    )
    transaction.on_commit(lambda: deliveries_dispatch([delivery.pk]))
    return True


def stakeholders_notify(*, escalation: Escalation, actor: Actor) -> list[int]:
    """Tell the other recipients of the escalation's emails that someone acknowledged or closed it.

    Called inside the transition's transaction, right after its event: one notice per recipient and
    event (the key holds the event id), so a repeated call queues nothing new. Notices pass the noise
    controls of each recipient (``noise.py``).
    """
    event = EscalationEvent.objects.filter(escalation_id=escalation.pk).only("pk").latest("id")
    actor_email = (getattr(actor, "email", "") or "").lower()
    told = (
        Delivery.objects.filter(escalation_id=escalation.pk)
        .exclude(state=Delivery.State.DEAD)
        .exclude(action__in=[NOTIFY_ACTION, "digest"])
        .filter(target__contains="@")
        .values_list("target", flat=True)
    )
    # Those who heard of it in a digest (the digest row belongs to the digest's first escalation).
    listed = DigestItem.objects.filter(escalation_id=escalation.pk, event__isnull=True).values_list(
        "delivery__target", flat=True
    )
    recipients = sorted({t.lower() for t in [*told, *listed]} - {actor_email})
    from .noise import Notice, notify_many

    # Notices are emails to people like any other: the same quiet hours, digest and cap apply.
    notices = [Notice(NOTIFY_ACTION, r, notify_key(escalation.pk, event.pk, r)) for r in recipients]
    queued = set(
        Delivery.objects.filter(idempotency_key__in=[n.key for n in notices]).values_list(
            "idempotency_key", flat=True
        )
    ) | set(DigestItem.objects.filter(event_id=event.pk).values_list("delivery__target", flat=True))
    notices = [n for n in notices if n.key not in queued and n.target not in queued]
    return notify_many(items=[(escalation, notices)], now=timezone.now(), new=False) if notices else []


def decision_write_back(*, escalation: Escalation) -> list[int]:
    """Queue the executive's approve/reject of a change order for the PM system (one row per escalation)."""
    from .outbound import change_order_target

    target = change_order_target(escalation)
    if target is None:
        return []
    now = timezone.now()
    return deliveries_queue(
        [
            Delivery(
                escalation=escalation,
                action=WRITEBACK_ACTION,
                target=target,
                idempotency_key=f"esc{escalation.pk}:{WRITEBACK_ACTION}:{target}"[:120],
                next_attempt_at=now,
                created_at=now,
            )
        ]
    )
