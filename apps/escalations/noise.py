"""Noise controls between an escalation and people's inboxes: executive digest, quiet hours, hourly cap.

Every notification to a person passes :func:`notify` on its way into the outbox. It is sent now,
deferred to the end of quiet hours, batched into a digest, or suppressed by the per-recipient hourly
cap; each notification not sent now as planned leaves a :class:`SuppressedNotification` with its reason.
Upstream notes, the dashboard flag and webhooks are not notifications to a person and pass untouched.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Count
from django.template.loader import render_to_string

from apps.bulk import copy_insert, copy_rows

from .delivery import PermanentFailure, deliveries_dispatch, performs, send_escalation_email
from .models import Delivery, DigestItem, Escalation, SuppressedNotification

EMAIL_ACTIONS = frozenset({"email_account_manager", "email_executives", "email_group", "email_address"})
DIGEST = "digest"


class Notice(NamedTuple):
    """One planned outbox row: an action for one target, with its idempotency key (a tuple: a first
    run plans ~21k of them)."""

    action: str
    target: str
    key: str


def quiet_until(now: dt.datetime) -> dt.datetime | None:
    """The end of the quiet hours ``now`` falls in (``FULCRUM["QUIET_HOURS"]`` as ``"22-7"``, local
    hours of ``TIME_ZONE``), or None outside them or when quiet hours are off."""
    spec = (settings.FULCRUM.get("QUIET_HOURS") or "").strip()
    if not spec:
        return None
    try:
        start, end = (int(part) for part in spec.split("-"))
    except ValueError as exc:
        raise ImproperlyConfigured(f"FULCRUM QUIET_HOURS {spec!r}: write start-end hours, e.g. 22-7") from exc
    if not (0 <= start <= 23 and 0 <= end <= 23) or start == end:
        raise ImproperlyConfigured(f"FULCRUM QUIET_HOURS {spec!r}: hours 0-23, start different from end")
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    local = now.astimezone(tz)
    hour = local.hour + local.minute / 60 + local.second / 3600
    day = local.date()
    if start < end:
        quiet = start <= hour < end
    else:  # across midnight: 22-7 is quiet from 22:00 until 07:00 the next day
        quiet = hour >= start or hour < end
        if hour >= start:
            day += dt.timedelta(days=1)
    if not quiet:
        return None
    return dt.datetime.combine(day, dt.time(end), tzinfo=tz).astimezone(dt.UTC)


def _bypasses_quiet_hours(escalation: Escalation, action: str) -> bool:
    return action == "email_executives" and escalation.severity == Escalation.Severity.CRITICAL


def _digest_on(escalation: Escalation) -> bool:
    if escalation.severity == Escalation.Severity.CRITICAL:
        return False  # a critical item is worth its own email
    snapshot = escalation.policy_snapshot or {}
    return bool(snapshot.get("digest_executives") or settings.FULCRUM.get("EXECUTIVE_DIGEST"))


def _recent_counts(targets: list[str], now: dt.datetime) -> Counter[str]:
    rows = (
        Delivery.objects.filter(
            target__in=set(targets),
            action__in=EMAIL_ACTIONS | {DIGEST},
            created_at__gt=now - dt.timedelta(hours=1),
        )
        .values("target")
        .annotate(n=Count("id"))
    )
    return Counter({row["target"]: row["n"] for row in rows})


def _open_digest(escalation: Escalation, target: str, now: dt.datetime) -> tuple[Delivery | None, bool]:
    """This period's digest for the target, still collecting, locked (None if it is already sending),
    and whether this call created it."""
    period: dt.timedelta = settings.FULCRUM["DIGEST_PERIOD"]
    # Whole periods of local wall-clock time from a Monday midnight (aware datetimes sharing one tzinfo
    # subtract as wall clocks): a daily digest closes at the company's midnight, an hourly one on the hour.
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    epoch = dt.datetime(2000, 1, 3, tzinfo=tz)
    start = epoch + ((now.astimezone(tz) - epoch) // period) * period
    end = start + period
    send_at = quiet_until(end) or end
    digest, created = Delivery.objects.get_or_create(
        idempotency_key=f"digest:{start:%Y%m%dT%H%M%S}:{target}"[:120],
        defaults={
            "escalation": escalation,
            "action": DIGEST,
            "target": target,
            "next_attempt_at": send_at,
            "created_at": now,
        },
    )
    # The sender's claim is an UPDATE of this row: holding the lock, a pending digest stays pending
    # until this transaction commits the new item, so the sender always sees it.
    locked = Delivery.objects.select_for_update().get(pk=digest.pk)
    return (locked if locked.state == Delivery.State.PENDING else None), created


def notify(*, escalation: Escalation, notices: list[Notice], now: dt.datetime, new: bool) -> list[int]:
    """Put notices into the outbox through the noise controls (caller's transaction).

    ``new`` marks the notices of a newly opened escalation (the ones a digest may batch). Returns the
    ids of rows due now; they are queued for a worker after commit, the rest are swept when due.
    """
    return notify_many(items=[(escalation, notices)], now=now, new=new)


def notify_many(
    *, items: Sequence[tuple[Escalation, list[Notice]]], now: dt.datetime, new: bool
) -> list[int]:
    """:func:`notify` for several escalations at once, with the same outcome as calling it for each in
    order: the hourly cap counts the rows queued for earlier items (as it counts committed and earlier
    rows of this transaction), a digest is opened once per recipient and lists every item. One query
    counts recent rows, one inserts the outbox rows, one the suppressions."""
    # The cap counts committed rows: concurrent transactions may each pass it once (an overshoot of at
    # most the number of concurrent evaluations). Per-recipient locks would make it exact, but a batch
    # opening many escalations would take them across calls in no global order and could deadlock.
    cap: int = settings.FULCRUM.get("RECIPIENT_HOURLY_CAP") or 0
    people = sorted({n.target for _, notices in items for n in notices if n.action in EMAIL_ACTIONS})
    # Rows to each recipient in the last hour, as a count query would see them before each item.
    counted = _recent_counts(people, now) if people and cap else Counter()
    quiet = quiet_until(now)
    digests: dict[str, Delivery | None] = {}
    digest_items: list[DigestItem] = []
    rows: list[dict[str, Any]] = []  # the outbox rows, by field
    suppressed: list[SuppressedNotification] = []
    deferred_keys: dict[str, SuppressedNotification] = {}

    for escalation, notices in items:
        digest_on = new and _digest_on(escalation)
        recent: Counter[str] = Counter()  # this item's own rows, on top of what was counted before it
        opened: list[str] = []  # digests this item created: counted from the next item on

        def record(notice: Notice, reason: str, detail: str, **extra: Any) -> SuppressedNotification:
            row = SuppressedNotification(
                escalation=escalation,  # noqa: B023 - used within this iteration only
                action=notice.action,
                target=notice.target,
                reason=reason,
                detail=detail[:300],
                created_at=now,
                **extra,
            )
            suppressed.append(row)
            return row

        for notice in notices:
            due = now
            if notice.action in EMAIL_ACTIONS:
                if digest_on and notice.action == "email_executives":
                    if notice.target not in digests:
                        digests[notice.target], created = _open_digest(escalation, notice.target, now)
                        if created:
                            opened.append(notice.target)
                    digest = digests[notice.target]
                    if digest is not None:
                        digest_items.append(DigestItem(delivery=digest, escalation=escalation, added_at=now))
                        record(
                            notice,
                            SuppressedNotification.Reason.DIGEST,
                            f"in the digest sent at {digest.next_attempt_at:%Y-%m-%d %H:%M} UTC",
                            delivery=digest,
                            deferred_until=digest.next_attempt_at,
                        )
                        continue
                sent = counted[notice.target] + recent[notice.target]
                if cap and sent >= cap:
                    record(
                        notice,
                        SuppressedNotification.Reason.CAPPED,
                        f"{sent} notifications to this recipient in the last hour; cap {cap}",
                    )
                    continue
                recent[notice.target] += 1
                if quiet and not _bypasses_quiet_hours(escalation, notice.action):
                    due = quiet
                    deferred_keys[notice.key] = record(
                        notice,
                        SuppressedNotification.Reason.QUIET_HOURS,
                        f"quiet hours {settings.FULCRUM['QUIET_HOURS']}: sent at {quiet:%Y-%m-%d %H:%M} UTC",
                        deferred_until=quiet,
                    )
            rows.append(
                {
                    "escalation_id": escalation.pk,
                    "action": notice.action,
                    "target": notice.target,
                    "idempotency_key": notice.key,
                    "next_attempt_at": due,
                    "created_at": now,
                }
            )
        if cap:
            counted.update(recent)
            counted.update(opened)
    DigestItem.objects.bulk_create(digest_items, ignore_conflicts=True)
    ids = copy_rows(Delivery, rows)
    for pk, row in zip(ids, rows, strict=True):
        if row["idempotency_key"] in deferred_keys:
            deferred_keys[row["idempotency_key"]].delivery_id = pk
    copy_insert(suppressed)
    ids = [pk for pk, row in zip(ids, rows, strict=True) if row["next_attempt_at"] <= now]
    if ids:
        transaction.on_commit(lambda: deliveries_dispatch(ids))
    return ids


# --- sending ----------------------------------------------------------------------------------------


# A policy level's email to a group member or an address is the escalation email itself.
performs("email_group", "email_address")(send_escalation_email)


@performs(DIGEST)
def send_digest(delivery: Delivery) -> dict:
    """One email listing the escalations batched into this digest."""
    items = list(
        DigestItem.objects.filter(delivery=delivery)
        .select_related("escalation__rule", "escalation__client")
        .order_by("added_at", "id")
    )
    escalations = [item.escalation for item in items]
    context = {
        "recipient": delivery.target,
        "site_url": settings.SITE_URL,
        "items": [
            {"escalation": e, "url": f"{settings.SITE_URL}/escalations/{e.pk}/"}
            for e in sorted(escalations, key=lambda e: (Escalation.SEVERITY_RANK.get(e.severity, 9), e.pk))
        ],
    }
    count = len(escalations)
    message = EmailMultiAlternatives(
        subject=f"[Fulcrum] Digest: {count} new escalation{'s' if count != 1 else ''}",
        body=render_to_string("escalations/email/digest.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[delivery.target],
        headers={"Message-ID": f"<digest-{delivery.pk}@fulcrum>", "X-Fulcrum-Digest": str(delivery.pk)},
    )
    message.attach_alternative(render_to_string("escalations/email/digest.html", context), "text/html")
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentFailure(f"recipient refused: {exc.recipients}") from exc
    except (TimeoutError, smtplib.SMTPException, ConnectionError) as exc:
        raise OSError(f"SMTP: {exc}") from exc
    return {"to": delivery.target, "escalations": [e.pk for e in escalations]}
