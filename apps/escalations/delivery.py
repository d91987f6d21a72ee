"""Sending outbox rows: claim them, perform each through its action class (``actions/``), record the results.

A claim is a conditional UPDATE (pending/failed and due, or sending with an expired claim), so two
workers never send the same row at once and a worker killed mid-send leaves a row that is re-claimed
when its claim expires; the far side drops the repeat by the row's idempotency key (an email's repeat
carries the same Message-ID). Rows go in chunks (``deliveries_dispatch``, ``deliveries_attempt``): one
claim for the chunk, its emails over one SMTP connection, its delivered rows recorded together.

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
import json
import logging
import math
import smtplib
import time
from collections.abc import Sequence
from typing import Any

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import Actor, audit_record
from apps.bulk import array_literal
from apps.errors import Permanent, Transient, configured_backoff

from . import actions, mail_return
from .actions import queue_for
from .actions.notices import DIGEST, NOTIFY_ACTION, notify_key
from .actions.upstream import WRITEBACK_ACTION
from .models import Delivery, DigestItem, Escalation, EscalationEvent

logger = logging.getLogger(__name__)


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


def _claim(pks: Sequence[int], now: dt.datetime) -> list[int]:
    """Claim the due and unclaimed rows among ``pks`` in one conditional UPDATE (``_due``'s condition on
    the row itself, so PostgreSQL re-checks it on a row another worker updated first): each row is
    claimed by one worker only. Returns the claimed ids."""
    if not pks:
        return []
    query = Delivery.objects.filter(_due(now), pk__in=list(pks)).query
    where, params = query.get_compiler(connection=connection).compile(query.where)
    table = connection.ops.quote_name(Delivery._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            # The table's name and the ORM's compiled filter, with its parameters.
            f"UPDATE {table} SET state = %s, attempts = attempts + 1, claimed_until = %s "  # noqa: S608
            f"WHERE {where} RETURNING id",
            [Delivery.State.SENDING, now + claim_for(), *params],
        )
        return [pk for (pk,) in cursor.fetchall()]


def _claimed_rows(pks: list[int]) -> list[Delivery]:
    rows = Delivery.objects.select_related(
        "escalation__client__owner",
        "escalation__project__source",
        "escalation__rule",
        f"escalation__{Escalation.EVIDENCE}",
    ).in_bulk(pks)
    return [rows[pk] for pk in pks if pk in rows]


def delivery_claim(pk: int, now: dt.datetime | None = None) -> Delivery | None:
    claimed = _claimed_rows(_claim([pk], now or timezone.now()))
    return claimed[0] if claimed else None


def due_delivery_ids(limit: int = 200, now: dt.datetime | None = None) -> list[int]:
    return list(
        Delivery.objects.filter(_due(now or timezone.now()))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def claims_lapsing(limit: int = 20) -> list[float]:
    """When the outbox's current claims lapse (epoch seconds, rounded up to a tenth, soonest first, at
    most ``limit``): a killed worker's rows are due again then."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT ceil(extract(epoch FROM claimed_until) * 10) / 10 AS at "  # noqa: S608
            f"FROM {connection.ops.quote_name(Delivery._meta.db_table)} "
            "WHERE state = %s AND claimed_until > now() ORDER BY at LIMIT %s",
            [Delivery.State.SENDING, limit],
        )
        return [float(at) for (at,) in cursor.fetchall()]


def delivery_attempt(pk: int) -> str:
    """Try one delivery now if it is due and unclaimed. Returns the resulting state."""
    return deliveries_attempt([pk]).get(pk, "not-due")


# Delivered rows are recorded together, at least this often (seconds): one UPDATE for a chunk of fast
# emails, while a slow chunk (write-backs) never holds many sent rows unrecorded, which a killed worker's
# sweeper would send again (with the same Message-ID, or after looking first: ``outcome_may_exist``).
RECORD_EVERY = 1.0


def deliveries_attempt(pks: Sequence[int]) -> dict[int, str]:
    """Try these rows now, in turn: the due and unclaimed ones are claimed in one statement, their emails
    share one SMTP connection (``mail_session``), and the delivered ones are recorded together; a failure
    is recorded at once and stops only its own row. Returns each claimed row's resulting state ("error"
    for an unexpected exception: the row keeps its claim, and the sweeper tries it again when it ends).

    A chunk stops starting rows when half its claim has gone by, and gives the rest back (``_defer``), so
    no row is still being sent when its claim runs out and another worker takes it.
    """
    from apps.connectors import ratelimit

    from .actions.email import mail_session

    rows = _claimed_rows(_claim(pks, timezone.now()))
    results: dict[int, str] = {}
    delivered: list[tuple[Delivery, dict, dt.datetime]] = []
    deferred: list[tuple[Delivery, float]] = []
    started = recorded = time.monotonic()
    budget = claim_for().total_seconds() / 2
    try:
        with mail_session(rows) as session:
            for index, delivery in enumerate(rows):
                if time.monotonic() - started > budget:
                    deferred += [(rest, 0.0) for rest in rows[index:]]
                    results.update((rest.pk, "deferred") for rest in rows[index:])
                    break
                try:
                    state, response = _attempt(delivery)
                except ratelimit.RateBudgetDeferred as exc:
                    deferred.append((delivery, float(exc.retry_after or 0.0)))
                    results[delivery.pk] = "deferred"
                    continue
                except Exception:
                    logger.exception("delivery %s failed unexpectedly; the sweeper retries it", delivery.pk)
                    results[delivery.pk] = "error"
                    continue
                results[delivery.pk] = state
                if response is not None:
                    delivered.append((delivery, response, timezone.now()))
                    if time.monotonic() - recorded > RECORD_EVERY:
                        _finish_delivered(delivered)
                        delivered, recorded = [], time.monotonic()
    finally:
        _finish_delivered(delivered)
        _defer(deferred)
    if session.unreachable:
        mail_return.watch()  # the rows failed on an unreachable server go when it answers again
    return results


def _attempt(delivery: Delivery) -> tuple[str, dict | None]:
    """Perform one claimed row: a failure is recorded here; a success is returned with its response for
    the caller to record (``_finish_delivered``), and a vendor's spent budget raised for the caller to give
    the row back (``_defer``)."""
    from apps.connectors import ratelimit

    try:
        # A vendor's spent budget raises instead of sleeping in this worker's slot (``_defer``).
        with ratelimit.deferring():
            response = actions.get(delivery.action).perform(delivery)
    except Permanent as exc:
        return _finish(delivery, Delivery.State.DEAD, error=str(exc)), None
    except ratelimit.RateBudgetDeferred:
        raise  # given back with the chunk's other deferred rows (``_defer``)
    except Transient as exc:
        return _failed(delivery, str(exc), retry_after=exc.retry_after), None
    except (OSError, smtplib.SMTPException, requests.RequestException) as exc:
        return _failed(delivery, f"{type(exc).__name__}: {exc}"), None
    return Delivery.State.DELIVERED, response or {}


def _finish_delivered(done: list[tuple[Delivery, dict, dt.datetime]]) -> None:
    """Record sent rows as delivered in one statement. Only the claim holder may: a row re-claimed after
    an expired claim (its attempts moved on) belongs to its new owner."""
    if not done:
        return
    table = connection.ops.quote_name(Delivery._meta.db_table)
    values = ", ".join(["(%s::bigint, %s::integer, %s::timestamptz, %s::jsonb)"] * len(done))
    params: list[Any] = []
    for delivery, response, at in done:
        params += [delivery.pk, delivery.attempts, at, json.dumps(response)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS d SET state = %s, claimed_until = NULL, last_error = '', "  # noqa: S608
            f"delivered_at = v.at, response = v.response "
            f"FROM (VALUES {values}) AS v(id, attempts, at, response) "
            f"WHERE d.id = v.id AND d.state = %s AND d.attempts = v.attempts",
            [Delivery.State.DELIVERED, *params, Delivery.State.SENDING],
        )


def _defer(rows: list[tuple[Delivery, float]]) -> None:
    """Nothing was sent (the vendor's shared budget is spent, or the chunk ran out of time before these
    rows), so each (row, wait) is given back: its attempt too (attempts count failures, and a busy budget
    is not one), due again after its wait (when the budget refills), in one statement for the chunk. The
    error of an earlier real attempt is kept: ``outcome_may_exist`` reads it. They are queued again
    together, one task per queue (and one for those due at once): a chunk of notes that meets a spent
    budget comes back as one chunk, not one task per row (``bench.escalate --timeline`` counts them)."""
    if not rows:
        return
    now = timezone.now()
    table = connection.ops.quote_name(Delivery._meta.db_table)
    values = ", ".join(["(%s::bigint, %s::integer, %s::timestamptz)"] * len(rows))
    params: list[Any] = []
    for delivery, wait in rows:
        params += [delivery.pk, delivery.attempts, now + dt.timedelta(seconds=wait)]
    with connection.cursor() as cursor:
        # Only the claim holder may: a row re-claimed after an expired claim belongs to its new owner.
        cursor.execute(
            f"UPDATE {table} AS d SET state = %s, attempts = d.attempts - 1, claimed_until = NULL, "  # noqa: S608
            f"next_attempt_at = v.due FROM (VALUES {values}) AS v(id, attempts, due) "
            f"WHERE d.id = v.id AND d.state = %s AND d.attempts = v.attempts RETURNING d.id",
            [Delivery.State.PENDING, *params, Delivery.State.SENDING],
        )
        given = {pk for (pk,) in cursor.fetchall()}
    groups: dict[tuple[str, bool], list[tuple[int, float]]] = {}
    for delivery, wait in rows:
        if delivery.pk in given:
            groups.setdefault((queue_for(delivery.action), wait > 0), []).append((delivery.pk, wait))
    for (queue, _), items in groups.items():
        longest = max(wait for _, wait in items)
        _schedule_retry([pk for pk, _ in items], dt.timedelta(seconds=longest), queue=queue)


def _failed(delivery: Delivery, error: str, retry_after: float | None = None) -> str:
    if delivery.attempts >= int(settings.FULCRUM["ACTION_MAX_ATTEMPTS"]):
        return _finish(
            delivery, Delivery.State.DEAD, error=f"gave up after {delivery.attempts} attempts: {error}"
        )
    return _finish(delivery, Delivery.State.FAILED, error=error, retry_after=retry_after)


def _finish(delivery: Delivery, state: str, *, error: str = "", retry_after: float | None = None) -> str:
    """Record a failed (due again after the backoff) or dead row."""
    now = timezone.now()
    fields: dict[str, Any] = {"state": state, "claimed_until": None, "last_error": error[:2000]}
    wait = None
    if state == Delivery.State.FAILED:
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
        _schedule_retry([delivery.pk], wait, queue=queue_for(delivery.action))
    return state


def _schedule_retry(pks: list[int], wait: dt.timedelta, *, queue: str = "delivery") -> None:
    """Inside a worker, put the retry of these rows (one task) on the broker for when they are due; beat's
    sweeper stays the safety net (a lost or early message only finds the rows not yet due)."""
    from celery import current_task

    if not current_task or not current_task.request.id:
        return
    try:
        _queue_rows(pks, queue=queue, countdown=wait.total_seconds() + 0.1)
    except Exception:  # the broker is down: the rows are recorded, and the sweeper will find them
        logger.warning(
            "could not schedule the retry of deliveries %s; beat's sweeper will", pks, exc_info=True
        )


# ---- queueing and replay -------------------------------------------------------------------------------


# A burst is split so that every worker slot gets a share at once (at least DISPATCH_SPREAD tasks), each
# task at most DISPATCH_CHUNK rows. A task claims its rows in one statement, sends its emails over one SMTP
# connection and records them in one more (``deliveries_attempt``), so a bigger chunk costs less per row,
# and a smaller one spreads further; one row's failure never stops the rest of its chunk.
DISPATCH_CHUNK = 20
DISPATCH_SPREAD = 8


def dispatch_chunks(pks: list[int]) -> list[list[int]]:
    size = max(1, min(DISPATCH_CHUNK, math.ceil(len(pks) / DISPATCH_SPREAD)))
    return [pks[start : start + size] for start in range(0, len(pks), size)]


def deliveries_dispatch(ids: list[int]) -> None:
    """Hand outbox rows to workers (call after commit), emails and write-backs on their own queues
    (``queue_for``). A lost message delays a row, never loses it: beat's sweeper sends every due row."""
    from .tasks import deliver

    by_queue: dict[str, list[int]] = {}
    # By target: a burst's emails to one person share chunks, and a chunk looks each person up once. On
    # one queue the rows that reach a person go first: a dashboard flag can wait for the emails.
    people = actions.reaches_person_names()
    # The ids as one array parameter: a first run dispatches ~21k rows, an IN list of as many parameters.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, action FROM {connection.ops.quote_name(Delivery._meta.db_table)}"  # noqa: S608
            " WHERE id = ANY(%s::bigint[]) ORDER BY target, id",
            [array_literal(ids)],
        )
        rows = cursor.fetchall()
    for pk, action in sorted(rows, key=lambda row: row[1] not in people):
        by_queue.setdefault(queue_for(action), []).append(pk)
    # People wait for the emails (the ``delivery`` queue); a vendor's note can wait for them: in a
    # burst, the emails' tasks are on the broker before the first write-back's.
    # One producer (one broker connection) for every message: a first run hands ~1,000 tasks over here.
    with deliver.app.producer_or_acquire() as producer:
        for queue in sorted(by_queue, key=lambda name: name != "delivery"):
            for chunk in dispatch_chunks(by_queue[queue]):
                _queue_rows(chunk, queue=queue, producer=producer)


def _queue_rows(pks: list[int], **options: Any) -> None:
    """One task for these outbox rows: ``deliver`` for one, ``deliver_many`` for a chunk (``options``:
    ``apply_async``'s, the queue among them)."""
    from .tasks import deliver, deliver_many

    if len(pks) == 1:
        deliver.apply_async((pks[0],), **options)
    else:
        deliver_many.apply_async((pks,), **options)


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
        .exclude(action__in=[NOTIFY_ACTION, DIGEST])
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
