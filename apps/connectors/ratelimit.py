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

# KEYS[1] the window's counter, KEYS[2] a hold set by ``hold``; ARGV[1] window in ms, ARGV[2] calls allowed,
# ARGV[3] calls wanted (a lease; 1 = one call). Returns {calls granted, ms}: with calls granted > 0, ms is
# how long the window they were counted in lasts (they may be spent until then, and no later); with none,
# ms to wait. The counter only ever counts granted calls, so it never passes the limit.
_SCRIPT = """
local held = redis.call('PTTL', KEYS[2])
if held > 0 then return {0, held} end
local limit = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
  return {0, ttl}
end
local grant = math.min(tonumber(ARGV[3]), limit - used)
redis.call('INCRBY', KEYS[1], grant)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
local now = redis.call('TIME')
return {grant, ttl, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl}
"""
# Unspent calls of a lease given back: KEYS[1] the counter; ARGV[1] calls, ARGV[2] the end of the window
# they were granted in (server ms, as the lease script returned it), ARGV[3] the window in ms. Only into
# that same window: a later window (ending at least a whole window later) never receives them.
_RETURN = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
local now = redis.call('TIME')
local ends = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl
if math.abs(ends - tonumber(ARGV[2])) * 2 > tonumber(ARGV[3]) then return 0 end
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local back = math.min(tonumber(ARGV[1]), used)
if back > 0 then redis.call('DECRBY', KEYS[1], back) end
return back
"""
# Calls reserved per round trip at most (``RateBudget(lease=)``), and never more than this share of the
# window's calls: a lease held by one process is a share the others cannot spend until it is used,
# returned or its window ends.
LEASE_SHARE = 50


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
    """``calls`` per ``seconds`` for one key; ``wait()`` blocks until a call may go, returns the wait.

    ``lease``: calls reserved per Redis round trip. The counter in Redis counts them when they are
    reserved, in the window they are reserved in; this instance spends them one per ``wait()`` until that
    window ends (measured from before the request, so on the early side) and drops what is left then, or
    gives it back to the same window (``release``, and on a ``hold``). So the budget means what it did with
    one round trip per call: at most ``calls`` calls start in any window, by everyone sharing the key. A
    lease is at most ``calls // LEASE_SHARE`` (1 for small budgets: one round trip per call, as before),
    and a ``hold`` (the vendor said its limit is spent) drops this instance's lease at once; another
    process's lease, at most that many calls, meets the vendor's own 429 and its reset, as any call does.
    Thread-safe: a stream's project readers share one instance.
    """

    def __init__(
        self,
        key: str,
        calls: int,
        seconds: float,
        *,
        url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lease: int = 1,
    ) -> None:
        self.key = f"fulcrum:rate:{key}"
        self.hold_key = f"{self.key}:hold"
        self.calls = calls
        self.window_ms = max(1, int(seconds * 1000))
        self.url = url or redis_url()
        self.sleep = sleep
        self.lease = max(1, min(int(lease), calls // LEASE_SHARE))
        self._lock = threading.Lock()
        self._tokens = 0  # calls reserved and not yet spent
        self._expires = 0.0  # time.monotonic() at which they lapse (their window's end, or earlier)
        self._window_end = 0  # the server's ms at that window's end, to give them back to it
        self.round_trips = 0  # reservations asked of Redis (tests and benches count them)

    def __call__(self) -> float:
        return self.wait()

    def hold(self, seconds: float) -> None:
        """No call for ``seconds`` by anyone sharing this budget (the vendor said its limit is spent)."""
        self.release()
        try:
            client = redis_client(self.url)
            client.set(self.hold_key, 1, px=max(1, int(seconds * 1000)), nx=False)
        except redis.RedisError:
            pass  # the client that saw the headers still pauses itself

    def release(self) -> int:
        """Give the unspent calls of this instance's lease back to their window (if it is still running);
        returns how many went back. Called when a client closes and on a ``hold``."""
        with self._lock:
            tokens, self._tokens = self._tokens, 0
            if tokens <= 0 or time.monotonic() >= self._expires:
                return 0
            try:
                client = redis_client(self.url)
                return int(client.eval(_RETURN, 1, self.key, tokens, self._window_end, self.window_ms))
            except redis.RedisError:
                return 0

    def _reserve(self) -> int:
        """Spend one reserved call (0) or reserve more; returns ms to wait (0: go). Holds ``_lock``."""
        if self._tokens > 0 and time.monotonic() < self._expires:
            self._tokens -= 1
            return 0
        self._tokens = 0
        asked = time.monotonic()
        client = redis_client(self.url)
        self.round_trips += 1
        answer = client.eval(_SCRIPT, 2, self.key, self.hold_key, self.window_ms, self.calls, self.lease)
        granted, ms = int(answer[0]), int(answer[1])
        if granted <= 0:
            # PTTL rounds down: a wait of exactly it could wake a moment before the window ends.
            return min(ms + 1, self.window_ms)
        self._tokens = granted - 1
        self._expires = asked + ms / 1000
        self._window_end = int(answer[2])
        return 0

    def wait(self) -> float:
        waited = 0.0
        while True:
            try:
                with self._lock:
                    pause_ms = self._reserve()
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
