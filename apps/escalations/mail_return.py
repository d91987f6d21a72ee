"""When the mail server is back, the emails an outage held go out at once, not on their own backoffs.

An email that cannot reach the mail server fails and is retried on the outbox's backoff (30 s doubling to
an hour in production): after an outage each row would wait out its own, minutes for a row that failed a
few times. So while emails wait on an unreachable server, one probe watches it: a task that opens an SMTP
connection and, while it cannot, queues itself again with a countdown (it never sleeps in a worker slot).
When a connection opens, every email failed on the unreachable server is made due and dispatched.

The probe's interval grows with the outage, a twentieth of it so far, between ``PROBE_MIN`` and
``PROBE_MAX``: a server back after a few seconds is noticed within a tenth of one, one back after an
hour within ten; an hour's outage costs about 450 connection attempts (a refused connection costs the
server nothing; a server that does not answer at all holds the one probe for ``EMAIL_TIMEOUT``).

One probe at a time: a Redis key (its value the outage's start) is taken when an email first finds the
server unreachable and renewed by each probe. A probe lost with a killed worker lets the key lapse within
a second or two, and the next email to fail, or the next outbox sweep (beat's, or the one a restarted
worker queues), starts another; without Redis there is no probe, and the backoff stays the fallback.

Only rows that failed to reach the server are released (``UNREACHABLE``): a refused recipient or a 4xx
reply keeps its own backoff.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress

import redis
from django.conf import settings
from django.core.mail import get_connection
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from apps.connectors.ratelimit import redis_client

from .actions.email import UNREACHABLE
from .models import Delivery

logger = logging.getLogger(__name__)

PROBE_MIN = 0.1
PROBE_MAX = 10.0
PROBE_SHARE = 1 / 20  # of the outage so far
KEY = "fulcrum:mail:probe"


def probe_interval(down_for: float) -> float:
    """Seconds until the next probe of a server unreachable for ``down_for`` seconds."""
    return min(PROBE_MAX, max(PROBE_MIN, down_for * PROBE_SHARE))


def _guard_ms(interval: float) -> int:
    """The key outlives a probe's countdown, so only a lost (or very late) probe lets it lapse, soon: the
    outbox sweep (a restarted worker's, beat's) then starts another (``watch_if_waiting``). A late probe
    beside a new one only probes twice."""
    return int((2 * interval + 1) * 1000)


def _redis() -> redis.Redis:
    return redis_client(settings.CELERY_BROKER_URL)


def waiting() -> QuerySet[Delivery]:
    """Emails failed on an unreachable mail server, waiting for their retry."""
    return Delivery.objects.filter(state=Delivery.State.FAILED, last_error__startswith=UNREACHABLE)


def watch() -> bool:
    """An email could not reach the mail server: start the probe unless one runs. Returns whether this
    call started it. Never raises: the outbox's own backoff retries the rows either way."""
    from .tasks import probe_mail_server

    started = time.time()
    try:
        if not _redis().set(KEY, repr(started), nx=True, px=_guard_ms(PROBE_MIN)):
            return False
        probe_mail_server.apply_async((started,), countdown=PROBE_MIN)
    except Exception:  # Redis or the broker down: the outbox's own backoff and sweep retry the rows
        logger.warning("could not start the mail server probe; the outbox's backoff retries", exc_info=True)
        return False
    return True


def watch_if_waiting() -> bool:
    """The outbox sweep's part: emails wait on an unreachable server, so make sure a probe watches it
    (its last one may have been lost with a killed worker)."""
    return waiting().exists() and watch()


def server_answers() -> bool:
    """Whether an SMTP connection opens (and is closed again) now."""
    backend = get_connection()
    try:
        backend.open()
    except Exception as exc:  # refused, timed out, a greeting other than 220: still down
        logger.info("mail server still unreachable: %s: %s", type(exc).__name__, exc)
        return False
    with suppress(Exception):
        backend.close()
    return True


def probe(started: float) -> str:
    """One probe of an outage that began at ``started`` (epoch seconds): release the waiting emails if
    the server answers, else queue the next probe."""
    from .tasks import probe_mail_server

    if not waiting().exists():
        forget()
        return "no email waits on the mail server"
    if server_answers():
        released = release()
        forget()
        return f"mail server back after {time.time() - started:.1f} s: {len(released)} emails released"
    interval = probe_interval(time.time() - started)
    with suppress(RedisError, OSError):
        _redis().set(KEY, repr(started), px=_guard_ms(interval))
    probe_mail_server.apply_async((started,), countdown=interval)
    return f"mail server unreachable for {time.time() - started:.1f} s; next probe in {interval:.2f} s"


def release() -> list[int]:
    """Make every email failed on the unreachable server due now, and hand it to the workers."""
    from .delivery import deliveries_dispatch

    now = timezone.now()
    with transaction.atomic():
        ids = list(waiting().filter(next_attempt_at__gt=now).values_list("pk", flat=True))
        # A row its own retry took meanwhile (no longer failed) is left to it.
        waiting().filter(pk__in=ids).update(next_attempt_at=now)
        if ids:
            transaction.on_commit(lambda: deliveries_dispatch(ids))
    return ids


def forget() -> None:
    with suppress(RedisError, OSError):
        _redis().delete(KEY)
