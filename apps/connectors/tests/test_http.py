"""The HTTP client against a scripted loopback server: retries, Retry-After, errors without secrets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from apps.connectors.http import HttpClient, UpstreamError, retry_after_seconds, safe_url
from apps.errors import Permanent, Transient


class Script:
    """Answers to return in order (status, headers, body); the last one repeats."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], str]] = [(200, {}, "{}")]
        self.requests: list[dict[str, str]] = []


@pytest.fixture
def upstream() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            script.requests.append(dict(self.headers))
            status, headers, body = script.answers.pop(0) if len(script.answers) > 1 else script.answers[0]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()
    server.server_close()


def make_client(base_url: str, sleeps: list[float], **kwargs: float) -> HttpClient:
    options = {"max_retries": 3, "backoff_base": 0.01, **kwargs}
    return HttpClient(
        base_url, headers={"Authorization": "Bearer s3cret-token"}, sleep=sleeps.append, **options
    )


def test_5xx_burst_is_retried_and_counted(upstream: tuple[str, Script]) -> None:
    base, script = upstream
    script.answers = [(500, {}, "boom"), (503, {}, "busy"), (200, {}, json.dumps({"ok": True}))]
    sleeps: list[float] = []
    client = make_client(base, sleeps)
    assert client.get_json("/thing") == {"ok": True}
    assert client.stats.api_calls == 3
    assert client.stats.retries == 2
    assert len(sleeps) == 2
    assert all(0 <= s <= 0.01 * 2 ** (i + 1) for i, s in enumerate(sleeps))  # full jitter within the cap
    assert script.requests[0]["Authorization"] == "Bearer s3cret-token"


def test_429_waits_what_retry_after_says_and_counts_it_as_rate_limited(upstream: tuple[str, Script]) -> None:
    base, script = upstream
    script.answers = [(429, {"Retry-After": "7"}, "slow down"), (200, {}, "[]")]
    sleeps: list[float] = []
    client = make_client(base, sleeps)
    assert client.get_json("/thing") == []
    assert sleeps == [7.0]
    assert client.stats.rate_limited_seconds == 7.0


def test_exhausted_retries_raise_a_clear_error_without_secrets(upstream: tuple[str, Script]) -> None:
    base, script = upstream
    script.answers = [(502, {}, "bad gateway " * 100)]
    client = make_client(base, [])
    with pytest.raises(UpstreamError) as caught:
        client.get_json("/thing", params={"api_key": "s3cret-key", "page": 2})
    error = caught.value
    assert error.status == 502 and isinstance(error, Transient)
    assert client.stats.api_calls == 4  # the first try and three retries
    assert "s3cret" not in str(error) and "page=2" in str(error)
    assert "502 after 4 attempts" in str(error)
    assert len(error.body) <= 300
    assert isinstance(error, requests.HTTPError)


def test_client_errors_are_not_retried(upstream: tuple[str, Script]) -> None:
    base, script = upstream
    script.answers = [(401, {}, '{"message": "bad token"}')]
    client = make_client(base, [])
    with pytest.raises(UpstreamError) as caught:
        client.get_json("/thing")
    assert caught.value.status == 401 and isinstance(caught.value, Permanent)
    assert client.stats.api_calls == 1


def test_connection_refused_is_retried_then_reported() -> None:
    sleeps: list[float] = []
    client = make_client("http://127.0.0.1:9", sleeps, max_retries=2)
    with pytest.raises(UpstreamError) as caught:
        client.get_json("/thing")
    assert caught.value.status == 0 and isinstance(caught.value, Transient)
    assert len(sleeps) == 2


def test_a_retry_after_longer_than_the_limit_is_not_waited_out(upstream: tuple[str, Script]) -> None:
    base, script = upstream
    script.answers = [(429, {"Retry-After": "3600"}, "")]
    sleeps: list[float] = []
    with pytest.raises(UpstreamError):
        make_client(base, sleeps, max_retry_after=60).get_json("/thing")
    assert sleeps == []


def test_retry_after_and_safe_url_parsing() -> None:
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    assert safe_url("http://x/y?access_token=abc&page=2") == "http://x/y?access_token=***&page=2"
