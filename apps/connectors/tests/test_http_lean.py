"""A plain GET goes straight to urllib3's pool (``LeanGetSession``) and is the same on the wire and in
the answer as requests' own path: request line, headers, redirects, cookies, gzip, errors."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.connectors.http import HttpClient, UpstreamError
from apps.connectors.session import EnvironmentOnceSession, query_string

PARAMS: dict[str, Any] = {
    "company_id": 4242,
    "filters[updated_at]": "2026-12-06T10:00:00Z...2026-12-06T11:00:00Z",
    "filters[id][]": [3, 14, 15],
    "note": "a b/c&d=é",
    "page": 2,
}


class Seen:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            headers: dict[str, str] = {"Content-Type": "application/json", "Total": "3"}
            body = json.dumps({"path": self.path}).encode()
            if self.path.startswith("/moved"):
                self.send_response(302)
                headers = {"Location": "/target?x=1"}
                body = b""
            else:
                self.send_response(200)
            if self.path.startswith("/cookie"):
                headers["Set-Cookie"] = "AWSALB=sticky; Path=/"
            if self.path.startswith("/gzip"):
                body = gzip.compress(body)
                headers["Content-Encoding"] = "gzip"
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def lean_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests' own send path refuses: what passes went the lean way."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("requests' Session.send was used for a plain GET")

    monkeypatch.setattr(requests.Session, "send", refuse)


def _session() -> requests.Session:
    session = requests.Session()
    session.headers.update({"Accept": "application/json", "Procore-Company-Id": "4242"})
    return session


def test_a_plain_get_is_the_same_request_as_requests_sends(server: tuple[str, Seen]) -> None:
    base, seen = server
    reference = _session().get(f"{base}/rest/v1.0/projects", params=PARAMS, timeout=5)
    lean = EnvironmentOnceSession()
    lean.headers.update({"Accept": "application/json", "Procore-Company-Id": "4242"})

    answer = lean.request("GET", f"{base}/rest/v1.0/projects", params=PARAMS, timeout=5)

    (ref_path, ref_headers), (path, headers) = seen.requests
    assert path == ref_path and "filters%5Bid%5D%5B%5D=3&filters%5Bid%5D%5B%5D=14" in path
    assert headers == ref_headers
    assert answer.status_code == reference.status_code == 200
    assert answer.url == reference.url and answer.json() == reference.json()
    assert answer.headers["total"] == "3" and answer.encoding == reference.encoding


def test_the_lean_path_serves_plain_gets(server: tuple[str, Seen], lean_only: None) -> None:
    base, seen = server
    client = HttpClient(base, headers={"Procore-Company-Id": "4242"})

    data, response = client.request_json("GET", "/gzip/list", params={"page": 1})

    assert data == {"path": "/gzip/list?page=1"} and response.headers["Content-Encoding"] == "gzip"
    assert client.stats.api_calls == 1 and seen.requests[0][1]["procore-company-id"] == "4242"


def test_a_redirect_is_followed_as_requests_follows_it(server: tuple[str, Seen]) -> None:
    base, seen = server
    answer = EnvironmentOnceSession().request("GET", f"{base}/moved", params={"a": 1}, timeout=5)

    assert answer.status_code == 200 and answer.json() == {"path": "/target?x=1"}
    assert [path for path, _ in seen.requests][-1] == "/target?x=1"


def test_a_cookie_the_vendor_sets_is_sent_back(server: tuple[str, Seen]) -> None:
    base, seen = server
    session = EnvironmentOnceSession()
    session.request("GET", f"{base}/cookie", timeout=5)
    session.request("GET", f"{base}/next", timeout=5)

    assert session.cookies.get("AWSALB") == "sticky"
    assert seen.requests[-1][1].get("cookie") == "AWSALB=sticky"


def test_a_refused_connection_is_requests_connection_error_and_retried() -> None:
    client = HttpClient("http://127.0.0.1:9/", max_retries=1, sleep=lambda s: None)
    with pytest.raises(UpstreamError, match="ConnectionError after 2 attempts"):
        client.get_json("/anything")
    with pytest.raises(requests.ConnectionError):
        EnvironmentOnceSession().request("GET", "http://127.0.0.1:9/anything", timeout=2)


_KEYS = st.text(min_size=1, max_size=12)
_VALUES = st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.none(), st.binary(max_size=6))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, st.one_of(_VALUES, st.lists(_VALUES, max_size=3)), max_size=5))
def test_the_query_is_the_one_requests_encodes(params: dict[str, Any]) -> None:
    """The direct ``urlencode`` of a dict of str and int values and the fallback for anything else write the
    text requests writes: non-ASCII, reserved characters, lists, bytes, booleans, None dropped."""
    reference = requests.models.RequestEncodingMixin._encode_params(params)  # type: ignore[attr-defined]

    assert query_string(params) == reference


def test_the_pool_is_kept_until_the_session_closes(server: tuple[str, Seen]) -> None:
    """The lean path keeps the pool requests' adapter gave it for an origin; closing the session closes
    it (its idle connections with it), and a GET after that asks the adapter again."""
    base, seen = server
    session = EnvironmentOnceSession()
    session.request("GET", f"{base}/one", timeout=5)
    (first,) = session._pools.values()
    session.request("GET", f"{base}/two", timeout=5)
    assert list(session._pools.values()) == [first]

    session.close()
    answer = session.request("GET", f"{base}/three", timeout=5)

    (second,) = session._pools.values()
    assert answer.json() == {"path": "/three"} and second is not first and first.pool is None
    assert [path for path, _ in seen.requests] == ["/one", "/two", "/three"]
