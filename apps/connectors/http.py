"""The one HTTP client every connector uses: timeouts, bounded retries with backoff, call accounting.

Retries cover what is worth retrying and nothing else: timeouts, connection errors, 5xx and 429. Waits are
the project's one backoff (``apps.errors.backoff``: exponential with full jitter), and a ``Retry-After``
header wins when longer: the vendor knows its own budget. Tokens travel in headers only and never reach
logs, errors or counts.

A write (POST or PATCH, RFC 9110 §9.2.2: not idempotent) is sent again only when it cannot have reached the
vendor (the connection was never made) or the vendor refused it unread (429, a 401 answered by a token
refresh). Once the request may have arrived (a read timeout, a reset, a 5xx, a 2xx whose answer was cut)
its outcome is unknown: the client raises ``UpstreamTransient(outcome_unknown=True)`` at once, and the
caller's outbox retries later, knowing it must first look for what the lost attempt wrote (HubSpot notes) or
resend the same idempotency key (QuickBooks ``requestid``). A POST that only reads (HubSpot's CRM search,
``POST /crm/v3/objects/{objectType}/search``) is retried like a GET; ``idempotent=`` says so explicitly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from django.conf import settings
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from apps.errors import Permanent, Transient, backoff

from .session import EnvironmentOnceSession

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Methods whose repetition has the effect of one request (RFC 9110 §9.2.2): retried on any transient failure.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# POST paths that only read: HubSpot's CRM search API (POST because the query is the body), documented at
# https://developers.hubspot.com/docs/api/crm/search (objects/{objectType}/search).
QUERY_POST_SUFFIXES = ("/search",)
# Query parameters that may carry a secret in some vendor's API; scrubbed from every URL we report.
_SECRET_PARAMS = ("token", "secret", "key", "password", "signature", "code")
BODY_EXCERPT = 300
T = TypeVar("T")


class UpstreamError(requests.HTTPError):
    """An upstream call that failed for good here (retries exhausted, or an answer no retry changes), with
    its status, scrubbed URL and body excerpt. Raised as one of the project's two kinds (``apps.errors``):
    ``UpstreamTransient`` or ``UpstreamPermanent``; catch this class for either.

    A subclass of ``requests.HTTPError`` so callers that already handle that keep working.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        url: str = "",
        body: str = "",
        response: requests.Response | None = None,
    ) -> None:
        super().__init__(message, response=response)
        self.status = status
        self.url = url
        self.body = body


class UpstreamTransient(UpstreamError, Transient):
    """The upstream was unavailable rather than refusing us (a timeout, a 5xx, a 429, a spent budget):
    trying later may work. ``retry_after``: the upstream's Retry-After or rate-limit reset, if it said one;
    ``outcome_unknown``: a write may have taken effect although no answer says so."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        **fields: Any,
    ) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


class UpstreamPermanent(UpstreamError, Permanent):
    """The upstream refused (a 4xx other than 429, an unusable answer): the same request gets the same."""


@dataclass
class CallStats:
    """What one client spent upstream; copied into ``SyncRun.counts``."""

    api_calls: int = 0
    retries: int = 0
    rate_limited_seconds: float = 0.0
    backoff_seconds: float = 0.0


def safe_url(url: str) -> str:
    """The URL with secret-looking query values replaced, fit for errors and logs."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v) for k, v in parse_qsl(parts.query)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="[]:*.,' ")))


def never_sent(exc: requests.RequestException) -> bool:
    """Whether the request failed before any byte of it can have reached the server: no connection was
    made (refused, unresolvable host, connect timeout). Everything else may have been received."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.exceptions.ProxyError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return False


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    """A ``requests.Session`` bound to one connection's base URL and auth headers."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        max_retry_after: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        budget: Callable[[], float] | None = None,
        reauthorize: Callable[[Mapping[str, str]], Mapping[str, str]] | None = None,
    ) -> None:
        conf: dict[str, Any] = settings.FULCRUM
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout if timeout is not None else float(conf["HTTP_TIMEOUT"])
        self.max_retries = max_retries if max_retries is not None else int(conf["HTTP_MAX_RETRIES"])
        self.backoff_base = (
            backoff_base if backoff_base is not None else float(conf.get("HTTP_BACKOFF_BASE", 0.5))
        )
        self.backoff_cap = (
            backoff_cap if backoff_cap is not None else float(conf.get("HTTP_BACKOFF_CAP", 30.0))
        )
        # A Retry-After longer than this is not waited out inside a sync: the run ends partial, resumes later.
        self.max_retry_after = (
            max_retry_after if max_retry_after is not None else float(conf.get("HTTP_MAX_RETRY_AFTER", 120.0))
        )
        self.sleep = sleep
        # Before every call: waits for the vendor tenant's shared budget, returns seconds waited.
        self.budget = budget
        # On a 401, with the rejected headers: fresh auth headers (an OAuth refresh) to retry once.
        self.reauthorize = reauthorize
        # After every answer: seconds the vendor's own headers ask us to pause before calling again (e.g.
        # Procore's X-Rate-Limit-Remaining: 0 until X-Rate-Limit-Reset), or None. The pause holds the shared
        # budget for every worker when it can (``budget.hold``) and this client in any case.
        self.pace: Callable[[requests.Response], float | None] | None = None
        self._resume_at = 0.0  # time.monotonic() before which this client does not call
        self.stats = CallStats()
        self._stats_lock = threading.Lock()  # a stream may call from several threads (Procore per project)
        self.session = EnvironmentOnceSession()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "Fulcrum/0.1"})
        self.session.headers.update(headers or {})

    def close(self) -> None:
        self.session.close()
        release = getattr(self.budget, "release", None)
        if release is not None:  # a budget's unspent reserved calls go back to their window
            release()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else urljoin(self.base_url, path.lstrip("/"))

    def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> requests.Response:
        """Send one request, retrying transient failures; return a 2xx response or raise UpstreamError.

        ``idempotent`` (default: by method, and POST queries such as HubSpot's search) decides whether a
        request that may have reached the vendor is sent again; a write never is (see the module doc)."""
        return self._send(method, path, False, idempotent, kwargs)[1]

    def request_json(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> tuple[Any, requests.Response]:
        """Like ``request``, and a 2xx answer whose body is not JSON (cut mid-body) is retried too (a read)
        or reported as an unknown outcome (a write)."""
        return self._send(method, path, True, idempotent, kwargs)

    def _idempotent(self, method: str, url: str, declared: bool | None) -> bool:
        if declared is not None:
            return declared
        method = method.upper()
        if method in IDEMPOTENT_METHODS:
            return True
        return method == "POST" and urlsplit(url).path.rstrip("/").endswith(QUERY_POST_SUFFIXES)

    def _send(
        self, method: str, path: str, expect_json: bool, idempotent: bool | None, kwargs: dict[str, Any]
    ) -> tuple[Any, requests.Response]:
        url = self.url(path)
        repeatable = self._idempotent(method, url, idempotent)
        # The full URL (with query) for errors and logs; the request itself still sends ``params``. Built
        # only when one is reported: preparing a request just to show it cost about 0.3 ms a call, as much
        # as the call itself over loopback (a full Procore sync makes 30k calls).
        params = kwargs.get("params")
        shown = functools.cache(
            lambda: safe_url(requests.Request(method, url, params=params).prepare().url or url)
        )
        kwargs.setdefault("timeout", self.timeout)
        attempt = 0
        reauthorized = False
        while True:
            self._await_resume(method, shown)
            if self.budget is not None:
                self._count(rate_limited_seconds=self.budget())
            self._count(api_calls=1)
            response: requests.Response | None = None
            paused: float | None = None
            try:
                response = self.session.request(method, url, **kwargs)
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                problem = f"{type(exc).__name__}"
                status = 0
                if not repeatable and not never_sent(exc):
                    raise self._unknown(method, shown(), problem, status, None) from exc
            else:
                status = response.status_code
                problem = f"HTTP {status}"
                paused = self._paced(response)
                if status < 400:
                    if not expect_json:
                        return None, response
                    try:
                        # The standard library's reader, not requests' (simplejson when installed, which
                        # refuses NaN and Infinity, tokens the bad-value quarantine must see).
                        return json.loads(response.content), response
                    except ValueError:
                        problem = f"HTTP {status} with a body that is not JSON"
                        if not repeatable:  # the write happened; its answer was lost on the way
                            raise self._unknown(method, shown(), problem, status, response) from None
                elif status == 401 and self.reauthorize is not None and not reauthorized:
                    # An expired or revoked access token: refresh once and send again (not a retry).
                    reauthorized = True
                    rejected = {k: str(v) for k, v in self.session.headers.items()}
                    self.session.headers.update(self.reauthorize(rejected))
                    continue
                elif status not in RETRY_STATUSES:
                    raise self._error(method, shown(), problem, status, response, retryable=False)
                elif status != 429 and not repeatable:
                    # A 5xx may come after the write took effect; a 429 refused the request unread.
                    raise self._unknown(method, shown(), problem, status, response)
            advised = (
                retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
            )
            if advised is None and status == 429 and paused:
                advised = paused
            wait = backoff(attempt, base=self.backoff_base, cap=self.backoff_cap, retry_after=advised)
            if attempt >= self.max_retries or (advised is not None and advised > self.max_retry_after):
                problem = f"{problem} after {attempt + 1} attempts"
                raise self._error(
                    method, shown(), problem, status, response, retryable=True, retry_after=advised
                )
            attempt += 1
            self._count(retries=1)
            if status == 429:
                self._count(rate_limited_seconds=wait)
            else:
                self._count(backoff_seconds=wait)
            logger.info("upstream %s %s: %s; retry %d in %.2fs", method, shown(), problem, attempt, wait)
            self.sleep(wait)

    def _count(self, **deltas: float) -> None:
        with self._stats_lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _paced(self, response: requests.Response) -> float | None:
        """Apply the vendor's pacing advice for ``response``: hold the shared budget and this client."""
        pause = self.pace(response) if self.pace is not None else None
        if not pause or pause <= 0:
            return None
        self._resume_at = max(self._resume_at, time.monotonic() + pause)
        hold = getattr(self.budget, "hold", None)
        if hold is not None:
            hold(pause)
        return pause

    def _await_resume(self, method: str, shown: Callable[[], str]) -> None:
        """Wait out a pause the vendor asked for; one longer than ``max_retry_after`` ends the run partial."""
        gap = self._resume_at - time.monotonic()
        if gap <= 0:
            return
        if gap > self.max_retry_after:
            raise UpstreamTransient(
                f"{method} {shown()}: the upstream's rate limit resets in {gap:.0f} s; trying again later",
                retry_after=gap,
            )
        self._count(rate_limited_seconds=gap)
        self.sleep(gap)

    def _error(
        self,
        method: str,
        url: str,
        problem: str,
        status: int,
        response: requests.Response | None,
        *,
        retryable: bool,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> UpstreamError:
        """``url`` is already scrubbed of secrets. A transient error carries ``retry_after`` (default: the
        answer's Retry-After), so the caller that tries later waits at least that long."""
        body = ""
        if response is not None:
            body = " ".join(response.text[:BODY_EXCERPT].split())
        message = f"{method} {url}: {problem}" + (f": {body}" if body else "")
        fields: dict[str, Any] = {"status": status, "url": url, "body": body, "response": response}
        if not retryable:
            return UpstreamPermanent(message, **fields)
        if retry_after is None and response is not None:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        return UpstreamTransient(message, retry_after=retry_after, outcome_unknown=outcome_unknown, **fields)

    def _unknown(
        self, method: str, url: str, problem: str, status: int, response: requests.Response | None
    ) -> UpstreamError:
        """A write that may have taken effect: not sent again here; the outbox retries and looks first."""
        problem = f"{problem}; the write may have taken effect"
        logger.info("upstream %s %s: %s; not resent (outcome unknown)", method, url, problem)
        return self._error(method, url, problem, status, response, retryable=True, outcome_unknown=True)

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request_json("GET", path, params=params)[0]

    def post_json(
        self,
        path: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> Any:
        return self.request_json("POST", path, json=body, headers=dict(headers or {}), idempotent=idempotent)[
            0
        ]


# ---- reading ahead ------------------------------------------------------------------------------------


class PrefetchCancelled(Exception):
    """Raised inside the read-ahead thread when the sync stopped taking pages (its retries end here)."""


def _refuse_database(*args: Any) -> Any:
    raise RuntimeError("the read-ahead thread must not use the database (fetch only)")


class Prefetch(Iterator[T]):
    """Iterate ``items`` (a stream's pages) one item ahead, on a thread of its own.

    While the caller stores item N, the thread produces item N+1 (the HTTP call and its JSON parse) and
    then waits: never more than one item ahead, so memory stays one page. The items arrive in order, and
    anything the producer raises (an ``UpstreamError`` after its retries) is raised to the caller when it
    asks for that item, i.e. after every earlier item was stored and its cursor committed, exactly as if it
    were read serially.

    The thread never touches the database: queries from it raise. The one step of a fetch that needs the
    database, refreshing an expired OAuth token (``client.reauthorize``), is handed to the caller's thread
    and runs there between items, outside any page's transaction. ``close()`` (or leaving the ``with``)
    stops the thread: a fetch in its retry or budget waits is cut short.
    """

    def __init__(self, items: Iterable[T], client: HttpClient | None = None) -> None:
        self._items = iter(items)
        self._client = client
        # Thread to caller: ("item", x), ("end",), ("error", exc) or ("call", fn, args, reply).
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._go = threading.Semaphore(0)  # caller to thread: produce one more item
        self._stop = threading.Event()
        self._pending = self._done = False
        self._restore: list[tuple[Any, str, Any]] = []
        self._thread = threading.Thread(target=self._run, name="sync-prefetch", daemon=True)
        self._caller = threading.get_ident()
        if client is not None:
            self._patch(client, "sleep", self._sleeper(client.sleep))
            if client.reauthorize is not None:
                self._patch(client, "reauthorize", self._on_caller(client.reauthorize))
            budget_sleep = getattr(client.budget, "sleep", None)
            if budget_sleep is not None:
                self._patch(client.budget, "sleep", self._sleeper(budget_sleep))
        self._thread.start()

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._restore.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def _sleeper(self, sleep: Callable[[float], None]) -> Callable[[float], None]:
        def interruptible(seconds: float) -> None:
            if self._stop.is_set():
                raise PrefetchCancelled()
            if sleep is time.sleep:
                self._stop.wait(seconds)
            else:
                sleep(seconds)
            if self._stop.is_set():
                raise PrefetchCancelled()

        return interruptible

    def _on_caller(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def forwarded(*args: Any) -> Any:
            if threading.get_ident() == self._caller:
                return fn(*args)
            reply: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
            self._inbox.put(("call", fn, args, reply))
            while True:
                try:
                    ok, value = reply.get(timeout=0.5)
                except queue.Empty:
                    if self._stop.is_set():
                        raise PrefetchCancelled() from None
                    continue
                if ok:
                    return value
                raise value

        return forwarded

    def _run(self) -> None:
        from django.db import connections

        try:
            with contextlib.ExitStack() as guards:
                for alias in connections:
                    guards.enter_context(connections[alias].execute_wrapper(_refuse_database))
                while True:
                    self._go.acquire()
                    if self._stop.is_set():
                        return
                    try:
                        item = next(self._items)
                    except StopIteration:
                        self._inbox.put(("end",))
                        return
                    except BaseException as exc:  # handed to the caller, raised where it asks for the item
                        self._inbox.put(("error", exc))
                        return
                    self._inbox.put(("item", item))
        finally:
            connections.close_all()  # only this thread's, and only if a refused query opened one

    def __iter__(self) -> Prefetch[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        if not self._pending:
            self._pending = True
            self._go.release()
        while True:
            message = self._inbox.get()
            if message[0] == "call":
                _, fn, args, reply = message
                try:
                    reply.put((True, fn(*args)))
                except Exception as exc:
                    reply.put((False, exc))
                continue
            self._pending = False
            if message[0] == "item":
                # Read the next one while the caller stores this one.
                self._pending = True
                self._go.release()
                return cast(T, message[1])
            self._done = True
            if message[0] == "error":
                raise message[1]
            raise StopIteration

    def close(self, wait: float = 5.0) -> None:
        """Stop reading ahead; wait up to ``wait`` seconds for a fetch under way (its answer is dropped)."""
        self._done = True
        self._stop.set()
        self._go.release()
        self._thread.join(wait)
        if not self._thread.is_alive():  # else it keeps the interruptible waits and the caller-run refresh
            # A caller that stopped early (a page it could not store) leaves the producer suspended at the
            # item read ahead: closed here, its own clean-up (Procore's project readers) runs now, while
            # their waits still stop at once, instead of whenever the garbage collector reaches it.
            close = getattr(self._items, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.warning("closing the read-ahead's producer failed", exc_info=True)
            for owner, name, value in reversed(self._restore):
                setattr(owner, name, value)
            self._restore.clear()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
