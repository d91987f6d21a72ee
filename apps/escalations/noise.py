"""Noise controls between an escalation and people's inboxes: digests, quiet hours, an hourly cap.

Every email to a person (escalation emails and notices such as "X acknowledged") passes
:func:`notify_many` on its way into the outbox, under that person's own settings (``preferences.py``:
their time zone, quiet hours, digest period and hourly cap, the company defaults where they set none;
executives get the digest by default). It is sent now, deferred to the end of their quiet hours, listed
in their next digest, or — past their hourly cap — rolled into their next digest, never dropped. Each
email not sent now as planned leaves a :class:`SuppressedNotification` with its reason. Upstream notes,
the dashboard flag and webhooks are not emails to a person and pass untouched.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Count

from apps.bulk import copy_insert, copy_rows

from . import actions
from .actions.notices import DIGEST, NOTIFY_ACTION, notify_event_id
from .delivery import deliveries_dispatch
from .models import Delivery, DigestItem, Escalation, SuppressedNotification
from .preferences import Preferences, company_quiet_hours, preferences_for

# Emails to a person (``Action.reaches_person``): escalation emails, notices of what someone did, digests.
PERSONAL = actions.reaches_person_names()


class Notice(NamedTuple):
    """One planned outbox row: an action for one target, with its idempotency key (a tuple: a first
    run plans ~21k of them)."""

    action: str
    target: str
    key: str


def quiet_until(
    now: dt.datetime, quiet: tuple[int, int] | str | None = "", tz: zoneinfo.ZoneInfo | None = None
) -> dt.datetime | None:
    """The end of the quiet hours ``now`` falls in, or None outside them or when there are none.

    ``quiet`` is (start, end) local hours of ``tz``; by default the company's (``FULCRUM["QUIET_HOURS"]``
    as ``"22-7"``, in ``TIME_ZONE``)."""
    if quiet == "":
        quiet = company_quiet_hours()
    if isinstance(quiet, str):
        raise ImproperlyConfigured(f"quiet hours {quiet!r} must be parsed first")
    if quiet is None:
        return None
    start, end = quiet
    tz = tz or zoneinfo.ZoneInfo(settings.TIME_ZONE)
    local = now.astimezone(tz)
    hour = local.hour + local.minute / 60 + local.second / 3600
    day = local.date()
    if start < end:
        silent = start <= hour < end
    else:  # across midnight: 22-7 is quiet from 22:00 until 07:00 the next day
        silent = hour >= start or hour < end
        if hour >= start:
            day += dt.timedelta(days=1)
    if not silent:
        return None
    return dt.datetime.combine(day, dt.time(end), tzinfo=tz).astimezone(dt.UTC)


def _recent_counts(targets: list[str], now: dt.datetime) -> Counter[str]:
    rows = (
        Delivery.objects.filter(
            target__in=set(targets),
            action__in=PERSONAL,
            created_at__gt=now - dt.timedelta(hours=1),
        )
        .values("target")
        .annotate(n=Count("id"))
    )
    return Counter({row["target"]: row["n"] for row in rows})


def _open_digest(
    escalation: Escalation, target: str, now: dt.datetime, period: dt.timedelta, person: Preferences
) -> tuple[Delivery | None, bool]:
    """The target's digest for the period ``now`` falls in, still collecting, locked (None if it is
    already sending), and whether this call created it."""
    # Whole periods of the person's wall-clock time from a Monday midnight (aware datetimes sharing one
    # tzinfo subtract as wall clocks): a daily digest closes at their midnight, an hourly one on the hour.
    epoch = dt.datetime(2000, 1, 3, tzinfo=person.tz)
    start = epoch + ((now.astimezone(person.tz) - epoch) // period) * period
    end = start + period
    send_at = quiet_until(end, person.quiet, person.tz) or end
    digest, created = Delivery.objects.get_or_create(
        idempotency_key=f"digest:{start.astimezone(dt.UTC):%Y%m%dT%H%M%S}:{target}"[:120],
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
    ids of rows due now; they are queued for a worker after commit, the rest are swept when due. A row
    done by queuing it (``Action.done_when_queued``: the dashboard flag) is inserted delivered.
    """
    return notify_many(items=[(escalation, notices)], now=now, new=new)


class _Batch:
    """The rows one :func:`notify_many` call writes, collected for three bulk inserts."""

    def __init__(self, now: dt.datetime, people: dict[str, Preferences]) -> None:
        self.now = now
        self.people = people
        self.digests: dict[tuple[str, dt.timedelta, dt.datetime], Delivery | None] = {}
        self.opened: list[str] = []  # digests created, counted against the cap from the next item on
        self.items: list[DigestItem] = []
        self.rows: list[dict[str, Any]] = []
        self.suppressed: list[SuppressedNotification] = []
        self.deferred: dict[str, SuppressedNotification] = {}

    def record(
        self, escalation: Escalation, notice: Notice, reason: str, detail: str, **extra: Any
    ) -> SuppressedNotification:
        row = SuppressedNotification(
            escalation=escalation,
            action=notice.action,
            target=notice.target,
            reason=reason,
            detail=detail[:300],
            created_at=self.now,
            **extra,
        )
        self.suppressed.append(row)
        return row

    def into_digest(
        self, escalation: Escalation, notice: Notice, period: dt.timedelta, kind: str
    ) -> Delivery:
        """List the notice in the person's digest for this period (the next one if this one is sending)."""
        person = self.people[notice.target]
        at = self.now
        digest: Delivery | None = None
        while digest is None:
            key = (notice.target, period, at)
            if key not in self.digests:
                self.digests[key], created = _open_digest(escalation, notice.target, at, period, person)
                if created:
                    self.opened.append(notice.target)
            digest = self.digests[key]
            at += period
        event_id = notify_event_id(notice.key) if notice.action == NOTIFY_ACTION else None
        self.items.append(
            DigestItem(
                delivery=digest, escalation=escalation, event_id=event_id, kind=kind, added_at=self.now
            )
        )
        return digest


def notify_many(
    *, items: Sequence[tuple[Escalation, list[Notice]]], now: dt.datetime, new: bool
) -> list[int]:
    """:func:`notify` for several escalations at once, with the same outcome as calling it for each in
    order: the hourly cap counts the rows queued for earlier items (as it counts committed and earlier
    rows of this transaction), a digest is opened once per recipient and period and lists every item.
    Each person's own settings apply (``preferences.py``). One query resolves the people, one counts
    recent rows, one inserts the outbox rows, one the digest items, one the suppressions."""
    # The cap counts committed rows: concurrent transactions may each pass it once (an overshoot of at
    # most the number of concurrent evaluations). Per-recipient locks would make it exact, but a batch
    # opening many escalations would take them across calls in no global order and could deadlock.
    targets = sorted({n.target for _, notices in items for n in notices if n.action in PERSONAL})
    people = preferences_for(targets)
    capped_people = [t for t in targets if people[t].cap]
    counted = _recent_counts(capped_people, now) if capped_people else Counter()
    batch = _Batch(now, people)

    for escalation, notices in items:
        recent: Counter[str] = Counter()  # this item's own rows, on top of what was counted before it
        batch.opened = []
        for notice in notices:
            due = now
            if notice.action in PERSONAL:
                person = people[notice.target]
                period = actions.get(notice.action).digest_period(escalation, person, new)
                if period is not None:
                    digest = batch.into_digest(escalation, notice, period, DigestItem.Kind.LISTED)
                    batch.record(
                        escalation,
                        notice,
                        SuppressedNotification.Reason.DIGEST,
                        f"in the digest sent at {digest.next_attempt_at:%Y-%m-%d %H:%M} UTC",
                        delivery=digest,
                        deferred_until=digest.next_attempt_at,
                    )
                    continue
                sent = counted[notice.target] + recent[notice.target]
                if person.cap and sent >= person.cap:
                    digest = batch.into_digest(
                        escalation, notice, person.rollup_period, DigestItem.Kind.CAPPED
                    )
                    batch.record(
                        escalation,
                        notice,
                        SuppressedNotification.Reason.CAPPED,
                        f"{sent} emails to this person in the last hour, cap {person.cap}: rolled into "
                        f"the digest sent at {digest.next_attempt_at:%Y-%m-%d %H:%M} UTC",
                        delivery=digest,
                        deferred_until=digest.next_attempt_at,
                    )
                    continue
                recent[notice.target] += 1
                quiet = quiet_until(now, person.quiet, person.tz)
                if quiet and not actions.get(notice.action).bypasses_quiet_hours(escalation):
                    due = quiet
                    batch.deferred[notice.key] = batch.record(
                        escalation,
                        notice,
                        SuppressedNotification.Reason.QUIET_HOURS,
                        f"quiet hours {person.quiet_spec} ({person.tz.key}): "
                        f"sent at {quiet:%Y-%m-%d %H:%M} UTC",
                        deferred_until=quiet,
                    )
            row = {
                "escalation_id": escalation.pk,
                "action": notice.action,
                "target": notice.target,
                "idempotency_key": notice.key,
                "next_attempt_at": due,
                "created_at": now,
            }
            action = actions.find(notice.action)  # an unknown one is left for the worker to refuse
            done = action.done_when_queued if action is not None else None
            if done is not None:  # nothing for a worker to do (the dashboard flag)
                row.update(state=Delivery.State.DELIVERED, attempts=1, delivered_at=now, response=done)
            batch.rows.append(row)
        counted.update(recent)
        counted.update(batch.opened)
    DigestItem.objects.bulk_create(batch.items, ignore_conflicts=True)
    ids = copy_rows(Delivery, batch.rows)
    for pk, row in zip(ids, batch.rows, strict=True):
        if row["idempotency_key"] in batch.deferred:
            batch.deferred[row["idempotency_key"]].delivery_id = pk
    copy_insert(batch.suppressed)
    ids = [
        pk
        for pk, row in zip(ids, batch.rows, strict=True)
        if row["next_attempt_at"] <= now and row.get("state") != Delivery.State.DELIVERED
    ]
    if ids:
        transaction.on_commit(lambda: deliveries_dispatch(ids))
    return ids
