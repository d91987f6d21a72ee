"""The one HTTP client every connector uses: timeouts, bounded retries with backoff, call accounting.

Retries cover what is worth retrying and nothing else: timeouts, connection errors, 5xx and 429. Waits are
exponential with full jitter (AWS "Exponential Backoff and Jitter"), except that a ``Retry-After`` header
wins: the vendor knows its own budget. Tokens travel in headers only and never reach logs, errors or counts.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from django.conf import settings

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Query parameters that may carry a secret in some vendor's API; scrubbed from every URL we report.
_SECRET_PARAMS = ("token", "secret", "key", "password", "signature", "code")
BODY_EXCERPT = 300


class UpstreamError(requests.HTTPError):
    """An upstream call that failed for good: retries exhausted or a non-retryable HTTP status.

    A subclass of ``requests.HTTPError`` so callers that already handle that keep working.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        url: str = "",
        body: str = "",
        retryable: bool = False,
        response: requests.Response | None = None,
    ) -> None:
        super().__init__(message, response=response)
        self.status = status
        self.url = url
        self.body = body
        # True when the upstream was unavailable rather than refusing us: trying later may work.
        self.retryable = retryable


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
        self.stats = CallStats()
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "Fulcrum/0.1"})
        self.session.headers.update(headers or {})

    def close(self) -> None:
        self.session.close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else urljoin(self.base_url, path.lstrip("/"))

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * (2**attempt)))

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request, retrying transient failures; return a 2xx response or raise UpstreamError."""
        return self._send(method, path, False, kwargs)[1]

    def request_json(self, method: str, path: str, **kwargs: Any) -> tuple[Any, requests.Response]:
        """Like ``request``, and a 2xx answer whose body is not JSON (cut mid-body) is retried too."""
        return self._send(method, path, True, kwargs)

    def _send(
        self, method: str, path: str, expect_json: bool, kwargs: dict[str, Any]
    ) -> tuple[Any, requests.Response]:
        url = self.url(path)
        # The full URL (with query) for errors and logs; the request itself still sends ``params``.
        shown = safe_url(requests.Request(method, url, params=kwargs.get("params")).prepare().url or url)
        kwargs.setdefault("timeout", self.timeout)
        attempt = 0
        reauthorized = False
        while True:
            if self.budget is not None:
                self.stats.rate_limited_seconds += self.budget()
            self.stats.api_calls += 1
            response: requests.Response | None = None
            try:
                response = self.session.request(method, url, **kwargs)
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                problem = f"{type(exc).__name__}"
                status = 0
            else:
                status = response.status_code
                problem = f"HTTP {status}"
                if status < 400:
                    if not expect_json:
                        return None, response
                    try:
                        return response.json(), response
                    except ValueError:
                        problem = f"HTTP {status} with a body that is not JSON"
                elif status == 401 and self.reauthorize is not None and not reauthorized:
                    # An expired or revoked access token: refresh once and send again (not a retry).
                    reauthorized = True
                    rejected = {k: str(v) for k, v in self.session.headers.items()}
                    self.session.headers.update(self.reauthorize(rejected))
                    continue
                elif status not in RETRY_STATUSES:
                    raise self._error(method, shown, problem, status, response, retryable=False)
            wait = self._backoff(attempt)
            advised = (
                retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
            )
            if advised is not None:
                wait = advised
            if attempt >= self.max_retries or (advised is not None and advised > self.max_retry_after):
                raise self._error(
                    method, shown, f"{problem} after {attempt + 1} attempts", status, response, retryable=True
                )
            attempt += 1
            self.stats.retries += 1
            if status == 429:
                self.stats.rate_limited_seconds += wait
            else:
                self.stats.backoff_seconds += wait
            logger.info("upstream %s %s: %s; retry %d in %.2fs", method, shown, problem, attempt, wait)
            self.sleep(wait)

    def _error(
        self,
        method: str,
        url: str,
        problem: str,
        status: int,
        response: requests.Response | None,
        *,
        retryable: bool,
    ) -> UpstreamError:
        """``url`` is already scrubbed of secrets."""
        body = ""
        if response is not None:
            body = " ".join(response.text[:BODY_EXCERPT].split())
        message = f"{method} {url}: {problem}" + (f": {body}" if body else "")
        return UpstreamError(
            message, status=status, url=url, body=body, retryable=retryable, response=response
        )

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request_json("GET", path, params=params)[0]

    def post_json(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> Any:
        return self.request_json("POST", path, json=body, headers=dict(headers or {}))[0]
