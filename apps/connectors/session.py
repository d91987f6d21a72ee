"""The ``requests.Session`` the HTTP client sends with: the environment read once per origin, and plain GETs
sent straight to urllib3's connection pool.

A loopback Procore list call cost 0.55 ms of client CPU through ``requests.Session.request`` and 0.22 ms
through urllib3's pool directly (``/tmp`` micro-bench, session 10): preparing and merging the request,
the send machinery (hooks, redirect resolution, cookie extraction via ``http.cookiejar``) and reading the
body as a stream, for a GET that needs none of it. A full Procore sync makes 30k of them. The lean path
sends the same request line and headers on the same pooled connection (requests' adapter picks the pool,
with its TLS settings), and hands back a ``requests.Response``; anything it does not cover is left to
requests: a proxy, netrc or explicit auth, client certificates, hooks, a body, cookies to send, other
arguments. A redirect or a cookie set by the answer hands over to requests as well (the redirect is asked
again through it; the cookie is stored in the session's jar, as requests would).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3 import HTTPConnectionPool
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)
from urllib3.util import Timeout

# The keyword arguments a plain GET may carry and still go the lean way.
LEAN_ARGUMENTS = frozenset({"params", "timeout", "headers", "proxies", "verify"})
_encode_params = requests.models.RequestEncodingMixin._encode_params  # type: ignore[attr-defined]


def query_string(params: Any) -> str:
    """``params`` as requests encodes them into the query (``RequestEncodingMixin._encode_params``).

    A dict of str keys and str or int values, which every list call sends, is encoded by ``urlencode``
    directly, to the same text: requests' version first asks whether the dict is a file (an ``isinstance``
    against a runtime-checkable ``Protocol``, which walks the protocol's members on every call) and copies
    every key and value to bytes: together with keeping the pool (``_pool``) 7–81 µs of a loopback Procore
    list call's ~445 µs of client CPU (three quiet A/B pairs of a ``/tmp`` micro-bench, session 14).
    Anything else (lists of values, bytes, None to drop, booleans, other types) is left to requests."""
    if type(params) is dict and all(
        type(key) is str and (type(value) is str or type(value) is int) for key, value in params.items()
    ):
        return urlencode(params)
    return _encode_params(params)


class EnvironmentOnceSession(requests.Session):
    """A ``requests.Session`` that reads the environment's settings once per origin, not once per request,
    and sends plain GETs the lean way (module doc).

    With ``trust_env`` requests reads every request's proxies (``*_proxy``, ``no_proxy``), CA bundle
    (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) and ``~/.netrc`` credentials from the environment again,
    scanning all of ``os.environ`` twice: 0.5 ms of a loopback call's 1.4 ms of client CPU, and a full
    Procore sync makes 30k calls. This session resolves the same settings the same way, with requests' own
    functions, the first time it calls an origin (scheme and host) and keeps them: what a run's calls use is
    the environment as the run found it. Explicit ``proxies``, ``verify`` and ``auth`` still win.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # the per-request lookups; done once per origin below instead
        self._origins: dict[tuple[str, str], tuple[dict[str, str], Any]] = {}
        self._origins_lock = threading.Lock()
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        # (adapter, scheme, host and port, verify) -> the pool requests' adapter chose and checked for them
        self._pools: dict[tuple[Any, str, str, Any], HTTPConnectionPool] = {}

    def _origin(self, url: str) -> tuple[dict[str, str], Any]:
        parts = urlsplit(url)
        key = (parts.scheme.lower(), parts.netloc.lower())
        found = self._origins.get(key)
        if found is None:
            with self._origins_lock:
                proxies = dict(requests.utils.get_environ_proxies(url))
                found = self._origins[key] = (proxies, requests.utils.get_netrc_auth(url))
        return found

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if args:  # positional use of requests' signature: left to it, with the environment read per call
            self.trust_env = True
            try:
                return super().request(method, url, *args, **kwargs)
            finally:
                self.trust_env = False
        url = url if isinstance(url, str) else url.decode()
        proxies, netrc = self._origin(url)
        given = kwargs.get("proxies")
        merged = dict(proxies)
        merged.update(given or {})
        kwargs["proxies"] = merged
        if kwargs.get("verify") in (True, None) and self._ca_bundle and self.verify is True:
            kwargs["verify"] = self._ca_bundle
        if netrc is not None and not kwargs.get("auth") and not self.auth:
            kwargs["auth"] = netrc
        if method == "GET" and self._lean(url, kwargs):
            answer = self._lean_get(url, kwargs)
            if answer is not None:
                return answer
        return super().request(method, url, **kwargs)

    def _lean(self, url: str, kwargs: dict[str, Any]) -> bool:
        """Whether this GET is one the lean path sends exactly as requests would."""
        return (
            kwargs.keys() <= LEAN_ARGUMENTS
            and not kwargs["proxies"]
            and kwargs.get("verify") in (True, None, self._ca_bundle)
            and self.verify is True
            and self.auth is None
            and self.cert is None
            and not self.cookies
            and not any(self.hooks.values())
            and "?" not in url
            and url.isascii()
            and url.startswith(("http://", "https://"))
        )

    def _lean_get(self, url: str, kwargs: dict[str, Any]) -> requests.Response | None:
        """Send the GET on requests' pooled connection; None when the answer needs requests (a redirect)."""
        query = query_string(kwargs.get("params") or {})
        full = f"{url}?{query}" if query else url
        headers: CaseInsensitiveDict[Any] = CaseInsensitiveDict(self.headers)
        headers.update(kwargs.get("headers") or {})
        for name in [name for name, value in headers.items() if value is None]:
            del headers[name]
        prepared = requests.PreparedRequest()
        prepared.method, prepared.url, prepared.headers, prepared.body = "GET", full, headers, None
        adapter = self.get_adapter(full)
        assert isinstance(adapter, requests.adapters.HTTPAdapter)
        verify = kwargs.get("verify")
        verify = True if verify is None else verify
        timeout = kwargs.get("timeout")
        started = time.perf_counter()
        split = urlsplit(full)
        try:
            pool = self._pool(adapter, prepared, split.scheme, split.netloc, verify)
            raw = pool.urlopen(
                "GET",
                f"{split.path or '/'}?{split.query}" if split.query else split.path or "/",
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=True,
                decode_content=True,
                retries=adapter.max_retries,
                timeout=timeout if isinstance(timeout, Timeout) else Timeout(connect=timeout, read=timeout),
            )
        except Exception as exc:
            raise _as_requests_error(exc, prepared) from exc
        if raw.get_redirect_location():
            return None
        response = requests.Response()
        response.status_code = raw.status
        response.headers = CaseInsensitiveDict(raw.headers)
        response.raw = raw
        response.reason = raw.reason or ""
        response.url = full
        response.request = prepared
        response.connection = adapter
        response.encoding = get_encoding_from_headers(response.headers)
        response._content = raw.data
        response._content_consumed = True  # type: ignore[attr-defined]
        response.elapsed = dt.timedelta(seconds=time.perf_counter() - started)
        if "set-cookie" in response.headers:
            extract_cookies_to_jar(response.cookies, prepared, raw)
            extract_cookies_to_jar(self.cookies, prepared, raw)
        return response

    def _pool(
        self, adapter: requests.adapters.HTTPAdapter, prepared: requests.PreparedRequest, *key: Any
    ) -> HTTPConnectionPool:
        """The adapter's pool for an origin and TLS setting, asked for once and then kept until ``close()``.

        Asking the adapter builds the pool key from the parsed URL, takes its pool manager's lock and (for
        https) stats the CA bundle, on every call, to answer with the same pool each time. A client calls
        one or two origins, far below the pool manager's limit (urllib3 2 drops a pool past it, without
        closing it, so a kept pool would still work)."""
        found = self._pools.get((adapter, *key))
        if found is None:
            pool = adapter.get_connection_with_tls_context(prepared, key[-1])
            assert isinstance(pool, HTTPConnectionPool)
            adapter.cert_verify(pool, prepared.url or "", key[-1], None)
            found = self._pools[(adapter, *key)] = pool
        return found

    def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
        super().close()


def _as_requests_error(exc: Exception, request: requests.PreparedRequest) -> Exception:
    """The exception requests raises for ``exc`` from urllib3 (``HTTPAdapter.send``; a bad gzip body is
    ``ContentDecodingError``, as when requests reads it). A body cut mid-read, which requests reports as
    ``ChunkedEncodingError``, is a ``ConnectionError`` here: the client retries a GET on either."""
    if isinstance(exc, MaxRetryError):
        reason = exc.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            return requests.ConnectTimeout(exc, request=request)
        if isinstance(reason, ResponseError):
            return requests.exceptions.RetryError(exc, request=request)
        if isinstance(reason, SSLError):
            return requests.exceptions.SSLError(exc, request=request)
        return requests.ConnectionError(exc, request=request)
    if isinstance(exc, ReadTimeoutError):
        return requests.ReadTimeout(exc, request=request)
    if isinstance(exc, SSLError):
        return requests.exceptions.SSLError(exc, request=request)
    if isinstance(exc, DecodeError):
        return requests.exceptions.ContentDecodingError(exc, request=request)
    if isinstance(exc, ProtocolError | ClosedPoolError | OSError):  # the connection, or the body, cut
        return requests.ConnectionError(exc, request=request)
    return exc
