"""One request budget per vendor tenant, shared by every worker through Redis.

A fixed window per (kind, tenant): each upstream call INCRements the window's counter (the first one sets its
expiry); past the limit the caller sleeps until the window ends. One Lua script makes the check atomic, so
any number of processes share the budget without a race. The vendors' own 429s still get ``Retry-After``
handling in the HTTP client: this budget only keeps us from provoking them.

Redis unavailable means no budget rather than no sync: the vendor's 429s remain the backstop.

Inside ``deferring()`` (the sync task wraps its run in it) a wait longer than
``FULCRUM["RATE_BUDGET_MAX_SLEEP"]`` is not slept: ``RateBudgetDeferred`` (an ``UpstreamTransient``)
ends the call, the sync run stops *partial* at its last committed page, and the task re-queues itself
with a countdown (``take_deferral()``), so the worker's slot goes to the work queued behind it instead of
to a sleep (issue 19). The flag is per process, which suits prefork workers (one task per process at a
time) and reaches the sync's prefetch thread. Webhook processing and outbox write-backs defer the same way
and give the attempt back (``webhooks.processing``, ``escalations.delivery._defer``): a spent budget is
not a failure, so it never uses up their retries.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache

import redis
from django.conf import settings

from .http import UpstreamTransient

logger = logging.getLogger(__name__)

# KEYS[1] the window's counter, KEYS[2] a hold set by ``hold``; ARGV[1] window in ms, ARGV[2] calls allowed.
# Returns 0 (go) or ms to wait.
_SCRIPT = """
local held = redis.call('PTTL', KEYS[2])
if held > 0 then return held end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n <= tonumber(ARGV[2]) then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return ttl
"""


_warned: set[str] = set()
_defer = False
_deferred_for = 0.0
_deferred_lock = threading.Lock()


class RateBudgetDeferred(UpstreamTransient):
    """The shared budget is spent for longer than a worker should sleep: try again after ``retry_after``."""

    def __init__(self, key: str, retry_after: float) -> None:
        super().__init__(f"rate budget {key} spent: deferred {retry_after:.1f} s", retry_after=retry_after)


def defer_long_waits(enabled: bool) -> None:
    """Long waits raise instead of sleeping while on (see ``deferring``)."""
    global _defer
    _defer = enabled


@contextlib.contextmanager
def deferring() -> Iterator[None]:
    """Within: a long budget wait raises ``RateBudgetDeferred`` (noted for ``take_deferral``)."""
    previous = _defer
    defer_long_waits(True)
    try:
        yield
    finally:
        defer_long_waits(previous)


def take_deferral() -> float:
    """The longest wait deferred in this process since the last call (0 if none), and forget it."""
    global _deferred_for
    with _deferred_lock:
        wait, _deferred_for = _deferred_for, 0.0
    return wait


def _note_deferral(wait: float) -> None:
    global _deferred_for
    with _deferred_lock:
        _deferred_for = max(_deferred_for, wait)


@cache
def redis_client(url: str) -> redis.Redis:
    """One client (connection pool) per Redis URL per process, failing fast: callers degrade, not hang."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _max_sleep() -> float:
    return float(getattr(settings, "FULCRUM", {}).get("RATE_BUDGET_MAX_SLEEP", 1.0))


def redis_url() -> str:
    conf = getattr(settings, "FULCRUM", {})
    return str(conf.get("RATE_BUDGET_REDIS_URL") or settings.CELERY_BROKER_URL)


class RateBudget:
    """``calls`` per ``seconds`` for one key; ``wait()`` blocks until a call may go, returns the wait."""

    def __init__(
        self,
        key: str,
        calls: int,
        seconds: float,
        *,
        url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.key = f"fulcrum:rate:{key}"
        self.hold_key = f"{self.key}:hold"
        self.calls = calls
        self.window_ms = max(1, int(seconds * 1000))
        self.url = url or redis_url()
        self.sleep = sleep

    def __call__(self) -> float:
        return self.wait()

    def hold(self, seconds: float) -> None:
        """No call for ``seconds`` by anyone sharing this budget (the vendor said its limit is spent)."""
        try:
            client = redis_client(self.url)
            client.set(self.hold_key, 1, px=max(1, int(seconds * 1000)), nx=False)
        except redis.RedisError:
            pass  # the client that saw the headers still pauses itself

    def wait(self) -> float:
        waited = 0.0
        while True:
            try:
                client = redis_client(self.url)
                pause_ms = int(client.eval(_SCRIPT, 2, self.key, self.hold_key, self.window_ms, self.calls))
            except redis.RedisError as exc:
                if self.key not in _warned:  # once per process and key, not on every call
                    _warned.add(self.key)
                    logger.warning(
                        "rate budget %s unavailable (%s): calling without it", self.key, type(exc).__name__
                    )
                return waited
            if pause_ms <= 0:
                return waited
            pause = pause_ms / 1000
            if _defer and pause > _max_sleep():
                _note_deferral(pause)
                raise RateBudgetDeferred(self.key, pause)
            self.sleep(pause)
            waited += pause
