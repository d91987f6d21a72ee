"""The HTTP client's session reads the environment's settings (proxies, ``no_proxy``, netrc) once per origin,
and still honours them as requests would: a proxy named in the environment is used, a host ``no_proxy``
names is called directly."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from apps.connectors.http import HttpClient


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A loopback server answering ``{}`` to any GET, recording each request line's target."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_a_proxy_from_the_environment_is_used(
    recorder: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, seen = recorder
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    client = HttpClient("http://vendor.invalid/api/")

    assert client.get_json("items", {"page": 1}) == {"ok": True}

    assert seen == ["http://vendor.invalid/api/items?page=1"]  # an absolute target: sent to the proxy


def test_a_host_in_no_proxy_is_called_directly(
    recorder: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, seen = recorder
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = HttpClient(base, max_retries=0)

    assert client.get_json("/direct") == {"ok": True}

    assert seen == ["/direct"]


def test_the_environment_is_read_once_per_origin(
    recorder: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, seen = recorder
    _clear_proxies(monkeypatch)
    reads: list[str] = []
    environ_proxies = requests.utils.get_environ_proxies

    def counted(url: str, no_proxy: str | None = None) -> dict[str, str]:
        reads.append(url)
        return environ_proxies(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.utils, "get_environ_proxies", counted)
    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    client = HttpClient(base)

    for page in range(5):
        client.get_json("/items", {"page": page})

    assert len(seen) == 5 and len(reads) == 1
