"""A write is sent once: the HTTP client never resends a POST that may have reached the vendor.

A real loopback server takes each request in full (the write happens), then answers as a broken network
would: the answer cut mid-body, a reset, a 5xx, silence. Reads are retried through all of it; writes are not
(their outcome is unknown, the outbox retries and looks first), except where the request provably never
arrived (connection refused) or the vendor refused it unread (429).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from apps.connectors.http import HttpClient, UpstreamError
from apps.errors import Transient


@dataclass
class Wire:
    """What the server does per request, in order (the last repeats), and what it received."""

    base_url: str = ""
    plan: list[str] = field(default_factory=lambda: ["ok"])
    received: list[tuple[str, str]] = field(default_factory=list)  # method, path


BODY = b'{"id": "501", "properties": {"hs_note_body": "written"}}'


def _read_request(conn: socket.socket) -> tuple[str, str]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return "", ""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = next(
        (int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length"), 0
    )
    while len(rest) < length:
        rest += conn.recv(4096)
    return method, path


@pytest.fixture
def wire() -> Iterator[Wire]:
    state = Wire()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            method, path = _read_request(conn)
            if not method:
                return
            state.received.append((method, path))  # the request arrived whole: the write is done
            how = state.plan.pop(0) if len(state.plan) > 1 else state.plan[0]
            if how == "ok":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                conn.sendall(b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY))
            elif how == "cut":  # headers promise the whole body; half of it comes, then the connection ends
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                conn.sendall(b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY[:20]))
            elif how == "reset":  # no answer at all
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            elif how in ("500", "429"):
                text = b"Internal Server Error" if how == "500" else b"Too Many Requests"
                conn.sendall(
                    b"HTTP/1.1 %s %s\r\nRetry-After: 0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                    % (how.encode(), text)
                )
            elif how == "silent":  # the write is done; the answer never comes
                stop.wait(3)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    state.base_url = f"http://127.0.0.1:{server.getsockname()[1]}"
    yield state
    stop.set()
    server.close()


def client(base_url: str, **options: float) -> HttpClient:
    return HttpClient(base_url, max_retries=3, backoff_base=0.001, sleep=lambda s: None, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["cut", "reset", "500"])
def test_a_post_whose_answer_is_lost_is_sent_once_and_reported_as_unknown(wire: Wire, fault: str) -> None:
    wire.plan = [fault, "ok"]
    http = client(wire.base_url)

    with pytest.raises(UpstreamError) as lost:
        http.post_json("/crm/v3/objects/notes", {"properties": {"hs_note_body": "x"}})

    assert wire.received == [("POST", "/crm/v3/objects/notes")]  # one note upstream, not two
    assert lost.value.outcome_unknown and isinstance(lost.value, Transient)
    assert "may have taken effect" in str(lost.value)
    assert http.stats.retries == 0


def test_a_post_answered_after_the_client_gave_up_waiting_is_not_sent_again(wire: Wire) -> None:
    wire.plan = ["silent", "ok"]
    http = client(wire.base_url, timeout=0.5)

    with pytest.raises(UpstreamError) as lost:
        http.request_json("PATCH", "/rest/v1.0/change_order_packages/7", json={"status": "approved"})

    assert wire.received == [("PATCH", "/rest/v1.0/change_order_packages/7")]
    assert lost.value.outcome_unknown


@pytest.mark.parametrize("fault", ["cut", "reset", "500"])
def test_reads_are_retried_through_the_same_faults(wire: Wire, fault: str) -> None:
    wire.plan = [fault, fault, "ok"]
    http = client(wire.base_url)

    assert http.get_json("/crm/v3/owners")["id"] == "501"
    # A POST that only reads (HubSpot's CRM search) is retried like a GET.
    wire.plan = [fault, "ok"]
    assert http.post_json("/crm/v3/objects/notes/search", {"limit": 1})["id"] == "501"

    assert [m for m, _ in wire.received] == ["GET", "GET", "GET", "POST", "POST"]
    assert http.stats.retries == 3


def test_a_post_refused_unread_with_429_is_sent_again(wire: Wire) -> None:
    wire.plan = ["429", "ok"]
    http = client(wire.base_url)

    assert http.post_json("/crm/v3/objects/notes", {})["id"] == "501"
    assert len(wire.received) == 2 and http.stats.retries == 1


def test_a_post_that_never_connected_is_retried_and_then_not_called_unknown() -> None:
    with socket.socket() as probe:  # a port nobody listens on: every connect is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = client(f"http://127.0.0.1:{port}")

    with pytest.raises(UpstreamError) as refused:
        http.post_json("/crm/v3/objects/notes", {})

    assert http.stats.api_calls == 4 and http.stats.retries == 3
    assert isinstance(refused.value, Transient) and not refused.value.outcome_unknown


def test_a_caller_may_declare_a_write_idempotent(wire: Wire) -> None:
    wire.plan = ["cut", "ok"]
    http = client(wire.base_url)

    assert http.post_json("/v3/company/1/query", {}, idempotent=True)["id"] == "501"
    assert len(wire.received) == 2
