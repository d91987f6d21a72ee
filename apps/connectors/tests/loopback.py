"""A scripted upstream over loopback HTTP for connector tests: JSON text served per path, requests recorded.

The body is sent as given (``NaN``, ``1e30`` and other tokens a real vendor may emit reach the client exactly
as on the wire). ``pages`` serves a list of records for the ``rest`` kind's page-style pagination.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, dict[str, str], str]


@dataclass
class Upstream:
    base_url: str = ""
    # path -> a function of the query (one value per parameter) giving (status, headers, body)
    routes: dict[str, Callable[[dict[str, str]], Answer]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path, query

    def records(self, path: str, records: list[str] | Callable[[], list[str]], key: str = "data") -> None:
        """Serve ``records`` (JSON texts, or a function giving them) at ``path``: page 1 has them all."""

        def answer(query: dict[str, str]) -> Answer:
            listed = records() if callable(records) else records
            shown = listed if query.get("page", "1") == "1" else []
            return 200, {}, '{"%s": [%s]}' % (key, ",".join(shown))  # noqa: UP031 - raw JSON text

        self.routes[path] = answer


def rest_stream(name: str, entity: str, path: str, fields: dict[str, str]) -> dict[str, Any]:
    """One ``rest`` stream over ``Upstream.records``: ids at ``id``, update times at ``updated``."""
    return {
        "name": name,
        "entity": entity,
        "path": path,
        "records_path": "data",
        "pagination": {"style": "page", "page_size": 500},
        "id_path": "id",
        "updated_at_path": "updated",
        "fields": fields,
    }


def record(**values: Any) -> str:
    return json.dumps(values)


@contextmanager
def serve() -> Iterator[Upstream]:
    upstream = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            upstream.requests.append((self.command, parts.path, query))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            route = upstream.routes.get(parts.path)
            status, headers, body = route(query) if route else (404, {}, '{"error": "not found"}')
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    upstream.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()
