"""What every webhook scheme shares, as pure functions (no database, no I/O, no vendor).

Each connector kind owns its own edge (``ConnectorKind.webhook_verify``, ``webhook_events``,
``webhook_split`` in its folder under ``kinds/``); this module holds what they are built from: the request
(:class:`Inbound`), the verdicts (:class:`Rejected` 401, :class:`Malformed` 400), what a delivery says
(:class:`Events` of :class:`Hint` s — "this record changed / went away"), constant-time comparison against
every secret a connection lists (current first, previous ones during rotation), and the Standard Webhooks
scheme, which any kind may use. Events are hints only: processing fetches the current record where the
vendor sends ids.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apps.errors import Permanent

MAX_BODY = 1024 * 1024  # bytes; larger deliveries are refused with 413 before they are read
TOLERANCE = 5 * 60  # seconds a signed timestamp may differ from our clock (HubSpot, Standard Webhooks)
REDACTED = "[redacted]"
# Header names whose values are secrets, or keyed digests of the body we would rather not keep.
_SECRET_HEADER_PARTS = ("auth", "secret", "token", "signature", "cookie", "api-key", "apikey", "password")
MAX_EVENT_ID = 255

Headers = Mapping[str, str]  # lower-cased names


class Rejected(Exception):
    """Not from the vendor (bad or missing signature) or replayed (stale timestamp): 401."""


class Malformed(ValueError, Permanent):
    """Authentic but not a body of the vendor's shape: 400."""


@dataclass(frozen=True)
class Inbound:
    """What verification needs of one request. ``uris``: the full URIs the sender may have signed."""

    method: str
    uris: tuple[str, ...]
    headers: Headers
    body: bytes
    now: float  # epoch seconds


@dataclass(frozen=True)
class Hint:
    """One record that changed upstream (``upsert``: fetch it, or use ``data``), was deleted, or absorbed
    others (``merge``: ``external_id`` survives, fetched like an upsert; ``merged`` are gone into it).

    ``scope`` is what the kind needs, besides the id, to read the record again (Procore: its project); it
    reaches the kind's ``fetch_records`` untouched, so generic processing never looks inside it."""

    stream: str
    external_id: str
    op: str  # "upsert" | "delete" | "merge"
    at: dt.datetime | None = None  # when upstream says it happened, if it says
    data: dict[str, Any] | None = None  # the record itself (Standard Webhooks)
    merged: tuple[str, ...] = ()  # "merge": the records gone into this one (it survives)
    scope: str = ""  # the parent the vendor lists this record under (Procore: its project), if it says


@dataclass(frozen=True)
class Events:
    """What one delivery says: the hints to apply and, by event type, the events deliberately not applied
    (another object type, an association change, an event too broken to read): counted, never an error."""

    hints: list[Hint]
    ignored: dict[str, int] = field(default_factory=dict)


def redact(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased header names with secret-bearing values replaced."""
    out = {}
    for name, value in headers:
        key = name.lower()
        out[key] = REDACTED if any(part in key for part in _SECRET_HEADER_PARTS) else value
    return out


def body_hash(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def b64_hmac(key: bytes, message: bytes) -> bytes:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest())


def any_equal(candidates: Iterable[bytes], given: bytes) -> bool:
    """Constant time per comparison, and every candidate is compared: timing tells nothing of which."""
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate, given)
    return matched


def check_time(seconds: float, now: float) -> None:
    if abs(now - seconds) > TOLERANCE:
        raise Rejected("timestamp outside the 5 minute tolerance")


def header(inbound: Inbound, name: str) -> str:
    value = inbound.headers.get(name, "").strip()
    if not value:
        raise Rejected(f"missing {name} header")
    return value


# ---- verification -------------------------------------------------------------------------------------


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after ``whsec_``; other secrets as they are."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def verify_standard(inbound: Inbound, secrets: list[str]) -> None:
    """Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id``, ``webhook-timestamp`` (epoch
    seconds, within the tolerance) and ``webhook-signature`` ("v1,<base64>" entries, space separated)."""
    msg_id = header(inbound, "webhook-id")
    stamp = header(inbound, "webhook-timestamp")
    if not stamp.isdigit():
        raise Rejected("webhook-timestamp is not epoch seconds")
    check_time(int(stamp), inbound.now)
    message = f"{msg_id}.{stamp}.".encode() + inbound.body
    expected = [b64_hmac(standard_key(s), message) for s in secrets]
    given = [
        value.encode()
        for version, _, value in (
            part.partition(",") for part in header(inbound, "webhook-signature").split()
        )
        if version == "v1"
    ]
    # Every pair is compared (no early exit): the sender may list signatures for several keys.
    matched = False
    for signature in given:
        matched |= any_equal(expected, signature)
    if not matched:
        raise Rejected("signature does not match")


# ---- reading events -----------------------------------------------------------------------------------


def hint_time(value: Any) -> dt.datetime | None:
    """An aware time from epoch ms or ISO 8601; None when absent or unreadable (it is only a hint)."""
    try:
        if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
            return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.UTC)
        if isinstance(value, str) and value:
            moment = dt.datetime.fromisoformat(value.replace("z", "Z"))
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def event_ref(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise Malformed(f"{what} must be an id, got {value!r}")
    return str(value).strip()


def decode(body: bytes) -> Any:
    """The JSON body, or Malformed."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed(f"body is not JSON: {exc}") from None


def bounded(key: str) -> str:
    """An event id that fits the inbox column: itself, or its hash when longer."""
    return key if len(key) <= MAX_EVENT_ID else body_hash(key.encode())


def count_ignored(labels: Iterable[str]) -> dict[str, int]:
    """``{"<why>": n}`` of the events a delivery holds but does not apply (``WebhookDelivery.summary``)."""
    return dict(Counter(label for label in labels if label))
