"""Mutable state shared by the vendor handlers of one running simulator."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .common import Request, Response, hubspot_time, now_ms
from .records import Company

DEFAULT_TOKENS = {
    "hubspot": "sim-hubspot-token",
    "quickbooks": "sim-qbo-token",
    "procore": "sim-procore-token",
    "rest": "sim-rest-token",
}


@dataclass
class OAuthGrant:
    """One client's OAuth2 grant: access tokens live ``ttl`` seconds; each refresh token works once."""

    client_id: str
    client_secret: str
    refresh_token: str
    ttl: float
    access: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch seconds)
    refreshes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.access.get(token)
        return expiry is not None and expiry > time.time()

    def refresh(self, client_id: str, client_secret: str, refresh_token: str) -> dict[str, Any] | None:
        """New access and refresh tokens, or None when the client or refresh token is wrong (or used)."""
        with self.lock:
            if (client_id, client_secret, refresh_token) != (
                self.client_id,
                self.client_secret,
                self.refresh_token,
            ):
                return None
            self.refreshes += 1
            access = f"at-{secrets.token_urlsafe(12)}"
            self.refresh_token = f"rt-{secrets.token_urlsafe(12)}"
            self.access[access] = time.time() + self.ttl
            return {
                "access_token": access,
                "refresh_token": self.refresh_token,
                "token_type": "bearer",
                "expires_in": self.ttl,
            }


@dataclass
class SimState:
    company: Company
    tokens: dict[str, str]
    notes: list[dict[str, Any]] = field(default_factory=list)
    hubspot_search_cap: int = 10_000
    # HubSpot documents no order among records sharing the sort property's value: shuffled when True (a
    # client that assumes id order within a tie is caught), by id otherwise.
    hubspot_shuffle_ties: bool = False
    idempotent: dict[str, Response] = field(default_factory=dict)  # QuickBooks ?requestid= replays
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # OAuth2 per system once enabled (oauth_enable): short-lived access tokens replace the fixed one.
    oauth: dict[str, OAuthGrant] = field(default_factory=dict)
    # Procore's rate limit as served in X-Rate-Limit-* headers: (calls, window seconds). Generous by default
    # (a whole-company sync reads every project); tests lower it to see the connector pause.
    procore_rate: tuple[int, float] = (1_000_000, 3600.0)
    procore_calls: dict[int, int] = field(default_factory=dict)  # window number -> calls

    def next_id(self) -> int:
        with self.lock:
            return next(self._ids)

    def authorized(self, system: str, req: Request) -> bool:
        header = req.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        grant = self.oauth.get(system)
        if grant is not None:
            return grant.valid(token.strip())
        return token.strip() == self.tokens.get(system)

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
