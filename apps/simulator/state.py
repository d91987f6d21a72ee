"""Mutable state shared by the vendor handlers of one running simulator."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from .common import Request, Response, hubspot_time, now_ms
from .records import Company

DEFAULT_TOKENS = {
    "hubspot": "sim-hubspot-token",
    "quickbooks": "sim-qbo-token",
    "procore": "sim-procore-token",
}


@dataclass
class SimState:
    company: Company
    tokens: dict[str, str]
    notes: list[dict[str, Any]] = field(default_factory=list)
    hubspot_search_cap: int = 10_000
    idempotent: dict[str, Response] = field(default_factory=dict)  # QuickBooks ?requestid= replays
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> int:
        with self.lock:
            return next(self._ids)

    def authorized(self, system: str, req: Request) -> bool:
        header = req.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.tokens.get(system)

    def record_note(
        self, system: str, target: str | int, body: Any, idempotency_key: str | None, **extra: Any
    ) -> dict[str, Any]:
        note = {
            "system": system,
            "target": target,
            "body": body,
            "idempotency_key": idempotency_key,
            "received_at": hubspot_time(now_ms()),
            **extra,
        }
        self.notes.append(note)
        return note
