"""The HTTP server: one port for HubSpot, QuickBooks and Procore paths, plus ``/_sim/`` control endpoints."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from . import docai, generic, hubspot, oauth, procore, quickbooks
from .common import Request, Response, json_response
from .faults import FaultPlan, FaultRule
from .records import Company
from .state import DEFAULT_TOKENS, OAuthGrant, SimState

VENDORS = (hubspot.handle, quickbooks.handle, procore.handle, generic.handle, docai.handle, oauth.handle)
REQUEST_LOG_SIZE = 10_000


def _vendor_fault_body(path: str, rule: FaultRule) -> tuple[Any, list[tuple[str, str]]]:
    """The vendor-shaped body (and headers) for an injected error."""
    limited = rule.kind == "rate_limit"
    if path.startswith("/crm/"):
        if limited:
            return (
                {
                    "status": "error",
                    "message": "You have reached your secondly limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": str(uuid.uuid4()),
                    "policyName": "SECONDLY",
                },
                [("X-HubSpot-RateLimit-Secondly", "10"), ("X-HubSpot-RateLimit-Secondly-Remaining", "0")],
            )
        return {
            "status": "error",
            "message": "Internal error",
            "correlationId": str(uuid.uuid4()),
            "category": "INTERNAL_ERROR",
        }, []
    if path.startswith("/v3/company/"):
        if limited:
            error = {
                "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                "Detail": "The request limit was reached.",
                "code": "3001",
            }
            return {"Fault": {"Error": [error], "type": "SERVICE"}}, []
        error = {
            "Message": "An application error has occurred while processing your request",
            "Detail": "System Failure Error: Service temporarily unavailable",
            "code": "10000",
        }
        return {"Fault": {"Error": [error], "type": "SystemFault"}}, []
    if path.startswith("/rest/"):
        if limited:
            # Procore documents no Retry-After on 429: the reset time is in X-Rate-Limit-Reset.
            reset = rule.reset_at(time.time())
            return {"errors": "Rate limit exceeded"}, [
                ("X-Rate-Limit-Limit", "3600"),
                ("X-Rate-Limit-Remaining", "0"),
                ("X-Rate-Limit-Reset", str(reset)),
            ]
        return {"errors": "Internal Server Error"}, []
    return {"error": "injected fault"}, []


def _control(sim: SimulatorServer, req: Request) -> Response:
    name, method = req.path.rstrip("/").removeprefix("/_sim/"), req.method
    try:
        if name == "health" and method == "GET":
            return json_response(200, {"ok": True})
        if name == "notes" and method == "GET":
            return json_response(200, list(sim.notes))
        if name == "planted" and method == "GET":
            return json_response(200, sim.company.planted)
        if name == "faults" and method == "GET":
            return json_response(200, sim.faults.to_json())
        if name == "faults" and method == "POST":
            sim.faults.replace(FaultPlan.from_json(req.json() if req.body else []).rules)
            return json_response(200, sim.faults.to_json())
        if name == "mutate" and method == "POST":
            body = req.json() if req.body else {}
            touched = sim.company.mutate(float(body.get("fraction", 0.01)), int(body.get("seed", 1)))
            return json_response(200, {"touched": [list(t) for t in touched]})
        if name == "delete" and method == "POST":
            body = req.json()
            sim.company.delete(str(body["system"]), str(body["object_type"]), body["id"])
            return json_response(200, {"ok": True})
        if name == "docai/push" and method == "POST":
            body = req.json()
            statuses = docai.push(sim.company, str(body["url"]), str(body["secret"]))
            return json_response(200, {"statuses": statuses})
        if name == "docai/planted" and method == "GET":
            return json_response(200, docai.expected(sim.company))
        if name == "reset" and method == "POST":
            sim.reset()
            return json_response(200, {"ok": True})
    except (ValueError, KeyError, TypeError) as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(404, {"error": f"no control endpoint {method} {req.path}"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FulcrumSimulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _HTTPServer

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(response.body)

    def _handle(self) -> None:
        sim = self.server.sim
        body = self._read_body()
        parts = urlsplit(self.path)
        sim.requests_log.append((self.command, self.path))
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, parts.path, parts.query, headers, body, sim.base_url)
        if parts.path.startswith("/_sim/"):
            self._send(_control(sim, req))
            return
        rule = sim.faults.match(self.command, parts.path, self.path)
        if rule is not None:
            if rule.kind == "drop_connection":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if rule.kind == "delay":
                sim._stopping.wait(rule.seconds)
            elif rule.kind in ("status", "rate_limit"):
                default_body, headers_out = _vendor_fault_body(parts.path, rule)
                status = 429 if rule.kind == "rate_limit" else rule.status
                if rule.kind == "rate_limit" and not parts.path.startswith("/rest/"):
                    now = time.time()
                    headers_out.append(("Retry-After", str(max(1, rule.reset_at(now) - int(now)))))
                self._send(
                    json_response(status, rule.body if rule.body is not None else default_body, headers_out)
                )
                return
            elif rule.kind == "duplicate_page":
                req.duplicate_page = True
        response = self._route(sim, req)
        if rule is not None and rule.kind == "malformed":
            cut = max(1, len(response.body) // 2)
            response = Response(200, response.body[:cut], [h for h in response.headers if h[0] != "Link"])
        self._send(response)

    def _route(self, sim: SimulatorServer, req: Request) -> Response:
        try:
            for vendor in VENDORS:
                response = vendor(sim.state, req)
                if response is not None:
                    return response
            return json_response(404, {"error": f"no such endpoint: {req.method} {req.path}"})
        except Exception:  # a simulator bug must still answer like a server would
            traceback.print_exc(file=sys.stderr)
            return json_response(500, {"error": "simulator internal error"})

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: SimulatorServer) -> None:
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            (self._connections.add if alive else self._connections.discard)(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class SimulatorServer:
    """Serves a ``Company`` over HTTP in a background daemon thread."""

    def __init__(
        self, company: Company, host: str = "127.0.0.1", port: int = 0, tokens: dict[str, str] | None = None
    ) -> None:
        self.company = company
        self.faults = FaultPlan()
        self.state = SimState(company, dict(tokens or DEFAULT_TOKENS))
        self.notes = self.state.notes
        self.requests_log: deque[tuple[str, str]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host, self.port = str(bound_host), int(bound_port)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hubspot_search_cap(self) -> int:
        """Results one HubSpot search may page through (10,000 like HubSpot; lower it to test splitting)."""
        return self.state.hubspot_search_cap

    @hubspot_search_cap.setter
    def hubspot_search_cap(self, value: int) -> None:
        self.state.hubspot_search_cap = value

    def oauth_enable(
        self, system: str, *, client_id: str, client_secret: str, refresh_token: str, ttl: float = 3600
    ) -> OAuthGrant:
        """From now on ``system`` accepts only access tokens issued by its token endpoint, valid ``ttl`` s."""
        grant = OAuthGrant(client_id, client_secret, refresh_token, ttl)
        self.state.oauth[system] = grant
        return grant

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"simulator:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def reset(self) -> None:
        """Regenerate the company in place and forget notes, faults and the request log."""
        self.company.reset()
        self.notes.clear()
        self.state.idempotent.clear()
        self.faults.clear()
        self.requests_log.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def notes_json(self) -> str:
        return json.dumps(self.notes)
