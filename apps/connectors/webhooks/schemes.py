"""How each vendor signs its webhooks and what its events mean, as pure functions (no database, no I/O).

``verify`` checks a delivery in constant time against every secret the connection lists (current first,
previous ones during rotation) and raises :class:`Rejected`; ``hints`` reads a verified body into
:class:`Hint` s — "this record changed / went away" — and raises :class:`Malformed` for a body of the wrong
shape. Events are hints only: processing fetches the current record where the vendor sends ids.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_BODY = 1024 * 1024  # bytes; larger deliveries are refused with 413 before they are read
TOLERANCE = 5 * 60  # seconds a signed timestamp may differ from our clock (HubSpot, Standard Webhooks)
REDACTED = "[redacted]"
# Header names whose values are secrets, or keyed digests of the body we would rather not keep.
_SECRET_HEADER_PARTS = ("auth", "secret", "token", "signature", "cookie", "api-key", "apikey", "password")
_MAX_EVENT_ID = 255

Headers = Mapping[str, str]  # lower-cased names


class Rejected(Exception):
    """Not from the vendor (bad or missing signature) or replayed (stale timestamp): 401."""


class Malformed(ValueError):
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
    """One record that changed upstream (``upsert``: fetch it, or use ``data``) or was deleted."""

    stream: str
    external_id: str
    op: str  # "upsert" | "delete"
    at: dt.datetime | None = None  # when upstream says it happened, if it says
    data: dict[str, Any] | None = None  # the record itself (Standard Webhooks)
    scope: str = ""  # the parent the vendor lists this record under (Procore: its project), if it says


def redact(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased header names with secret-bearing values replaced."""
    out = {}
    for name, value in headers:
        key = name.lower()
        out[key] = REDACTED if any(part in key for part in _SECRET_HEADER_PARTS) else value
    return out


def body_hash(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _b64_hmac(key: bytes, message: bytes) -> bytes:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest())


def _any_equal(candidates: Iterable[bytes], given: bytes) -> bool:
    """Constant time per comparison, and every candidate is compared: timing tells nothing of which."""
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate, given)
    return matched


def _check_time(seconds: float, now: float) -> None:
    if abs(now - seconds) > TOLERANCE:
        raise Rejected("timestamp outside the 5 minute tolerance")


def _header(inbound: Inbound, name: str) -> str:
    value = inbound.headers.get(name, "").strip()
    if not value:
        raise Rejected(f"missing {name} header")
    return value


# ---- verification -------------------------------------------------------------------------------------


def _verify_hubspot(inbound: Inbound, secrets: list[str]) -> None:
    signature = _header(inbound, "x-hubspot-signature-v3").encode()
    stamp = _header(inbound, "x-hubspot-request-timestamp")
    if not stamp.isdigit():
        raise Rejected("X-HubSpot-Request-Timestamp is not epoch milliseconds")
    _check_time(int(stamp) / 1000, inbound.now)
    method = inbound.method.upper().encode()
    candidates = (
        _b64_hmac(secret.encode(), method + uri.encode() + inbound.body + stamp.encode())
        for secret in secrets
        for uri in inbound.uris
    )
    if not _any_equal(candidates, signature):
        raise Rejected("signature does not match")


def _verify_quickbooks(inbound: Inbound, secrets: list[str]) -> None:
    signature = _header(inbound, "intuit-signature").encode()
    if not _any_equal((_b64_hmac(s.encode(), inbound.body) for s in secrets), signature):
        raise Rejected("signature does not match")


def _verify_procore(inbound: Inbound, secrets: list[str]) -> None:
    given = _header(inbound, "authorization").encode()
    if not _any_equal((s.encode() for s in secrets), given):
        raise Rejected("authorization does not match")


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after ``whsec_``; other secrets as they are."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def _verify_standard(inbound: Inbound, secrets: list[str]) -> None:
    msg_id = _header(inbound, "webhook-id")
    stamp = _header(inbound, "webhook-timestamp")
    if not stamp.isdigit():
        raise Rejected("webhook-timestamp is not epoch seconds")
    _check_time(int(stamp), inbound.now)
    message = f"{msg_id}.{stamp}.".encode() + inbound.body
    expected = [_b64_hmac(standard_key(s), message) for s in secrets]
    given = [
        value.encode()
        for version, _, value in (
            part.partition(",") for part in _header(inbound, "webhook-signature").split()
        )
        if version == "v1"
    ]
    # Every pair is compared (no early exit): the sender may list signatures for several keys.
    matched = False
    for signature in given:
        matched |= _any_equal(expected, signature)
    if not matched:
        raise Rejected("signature does not match")


VERIFIERS: dict[str, Callable[[Inbound, list[str]], None]] = {
    "hubspot": _verify_hubspot,
    "quickbooks": _verify_quickbooks,
    "procore": _verify_procore,
    "rest": _verify_standard,
}


def verify(kind: str, inbound: Inbound, secrets: list[str]) -> None:
    """Raise Rejected unless ``inbound`` is signed with one of ``secrets`` (and fresh, where signed so)."""
    if not secrets:
        raise Rejected("the connection has no webhook secret")
    VERIFIERS[kind](inbound, secrets)


# ---- event ids ------------------------------------------------------------------------------------------


def event_id(kind: str, headers: Headers, body: bytes, payload: Any = None) -> str:
    """The delivery's identity for the inbox: the vendor's event id where it has one, else the body's hash.

    HubSpot: the batch's ``eventId`` s joined (hashed when long); QuickBooks: the body's hash (it has no id);
    Procore: the event's ``ulid`` / ``id``; Standard Webhooks: ``webhook-id``.
    """
    if kind == "rest":
        msg_id = headers.get("webhook-id", "").strip()
        if msg_id:
            return msg_id if len(msg_id) <= _MAX_EVENT_ID else body_hash(msg_id.encode())
    elif kind == "hubspot" and isinstance(payload, list) and payload:
        ids = [str(e.get("eventId", "")) for e in payload if isinstance(e, dict)]
        if len(ids) == len(payload) and all(ids):
            joined = ",".join(sorted(ids))
            return joined if len(joined) <= _MAX_EVENT_ID else body_hash(joined.encode())
    elif kind == "procore" and isinstance(payload, dict):
        value = str(payload.get("ulid") or payload.get("id") or "")
        if value:
            return value[:_MAX_EVENT_ID]
    return body_hash(body)


# ---- shapes -------------------------------------------------------------------------------------------


def _time(value: Any) -> dt.datetime | None:
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


def _id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise Malformed(f"{what} must be an id, got {value!r}")
    return str(value).strip()


def _hubspot_hints(payload: Any, options: Mapping[str, Any], headers: Headers) -> list[Hint]:
    if not isinstance(payload, list) or not payload:
        raise Malformed("expected a non-empty JSON array of events")
    hints = []
    for index, event in enumerate(payload):
        if not isinstance(event, dict):
            raise Malformed(f"event {index} is not an object")
        subscription = event.get("subscriptionType")
        if not isinstance(subscription, str) or "." not in subscription:
            raise Malformed(f"event {index}: subscriptionType must be '<object>.<event>'")
        object_id = _id(event.get("objectId"), f"event {index}: objectId")
        obj, _, action = subscription.partition(".")
        if obj != "company":
            continue  # contacts, deals, ...: not synced
        at = _time(event.get("occurredAt"))
        if action == "deletion":
            hints.append(Hint("companies", object_id, "delete", at))
            continue
        hints.append(Hint("companies", object_id, "upsert", at))
        # A merge leaves the merged-away companies gone: fetching them finds nothing and tombstones them.
        for other in event.get("mergedObjectIds") or []:
            hints.append(Hint("companies", _id(other, f"event {index}: mergedObjectIds"), "upsert", at))
    return hints


QBO_STREAMS = {
    "Customer": "customers",
    "Invoice": "invoices",
    "Bill": "bills",
    "Purchase": "purchases",
    "Estimate": "estimates",
}


def _quickbooks_hints(payload: Any, options: Mapping[str, Any], headers: Headers) -> list[Hint]:
    if not isinstance(payload, dict) or not isinstance(payload.get("eventNotifications"), list):
        raise Malformed("expected {'eventNotifications': [...]}")
    realm = str(options.get("realm_id") or "")
    hints = []
    for index, notification in enumerate(payload["eventNotifications"]):
        if not isinstance(notification, dict):
            raise Malformed(f"eventNotifications[{index}] is not an object")
        entities = (notification.get("dataChangeEvent") or {}).get("entities")
        if not isinstance(entities, list):
            raise Malformed(f"eventNotifications[{index}].dataChangeEvent.entities must be a list")
        other_realm = realm and str(notification.get("realmId") or "") != realm
        for number, entity in enumerate(entities):
            where = f"eventNotifications[{index}].entities[{number}]"
            if not isinstance(entity, dict) or not isinstance(entity.get("name"), str):
                raise Malformed(f"{where}: expected an object with name, id and operation")
            entity_id = _id(entity.get("id"), f"{where}.id")
            stream = QBO_STREAMS.get(entity["name"])
            if other_realm or stream is None:
                continue
            op = "delete" if str(entity.get("operation", "")).lower() == "delete" else "upsert"
            hints.append(Hint(stream, entity_id, op, _time(entity.get("lastUpdated"))))
    return hints


# Procore webhook resource names (the trigger's ``resource_name``; v4.0 calls it ``resource_type``) of the
# records we sync. The list of names is served by ``GET /rest/v1.0/webhooks/resources``; the names below are
# the ones Procore's sandbox lists for these tools (company level: Projects, Company Vendors; project level:
# Tasks, Change Order Packages, Submittals). Older spellings are kept: unknown names are ignored anyway.
PROCORE_STREAMS = {
    "projects": "projects",
    "company_vendors": "vendors",
    "project_vendors": "vendors",
    "vendors": "vendors",
    "tasks": "milestones",
    "schedule_tasks": "milestones",
    "change_order_packages": "change_orders",
    "submittals": "submittals",
}
# Procore payload formats (developers.procore.com/documentation/webhooks, "Payload Formats"): v2.0 (legacy)
# and v3.0 (adds related_resources) have numeric ids, ``resource_name`` and ``event_type``
# (create / update / delete); v4.0 has string ids, ``resource_type`` and ``reason`` (more than the three).
_PROCORE_DELETE = ("delete", "deleted", "destroy", "destroyed")


def _procore_hints(payload: Any, options: Mapping[str, Any], headers: Headers) -> list[Hint]:
    if not isinstance(payload, dict):
        raise Malformed("expected a JSON object (one event)")
    v4 = "reason" in payload or "resource_type" in payload
    name = payload.get("resource_type" if v4 else "resource_name")
    action = payload.get("reason" if v4 else "event_type")
    if not isinstance(name, str) or not isinstance(action, str):
        fields = (
            "resource_type, resource_id and reason" if v4 else "resource_name, resource_id and event_type"
        )
        raise Malformed(f"an event needs {fields}")
    resource_id = _id(payload.get("resource_id"), "resource_id")
    company = str(options.get("company_id") or "")
    if company and payload.get("company_id") not in (None, "") and str(payload["company_id"]) != company:
        return []
    stream = PROCORE_STREAMS.get(re.sub(r"[\s/-]+", "_", name.strip().lower()))
    if stream is None:
        return []
    project = payload.get("project_id")
    scope = _id(project, "project_id") if project not in (None, "") else ""
    op = "delete" if action.lower() in _PROCORE_DELETE else "upsert"
    return [Hint(stream, resource_id, op, _time(payload.get("timestamp")), scope=scope)]


_STANDARD_TYPE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\.(created|updated|deleted)$")


def _configured_streams(options: Mapping[str, Any]) -> set[str] | None:
    """The rest connection's stream names, or None when the options do not list them (checked elsewhere)."""
    streams = options.get("streams")
    if not isinstance(streams, list):
        return None
    return {s["name"] for s in streams if isinstance(s, dict) and isinstance(s.get("name"), str)}


def _standard_hints(payload: Any, options: Mapping[str, Any], headers: Headers) -> list[Hint]:
    if not isinstance(payload, dict):
        raise Malformed("expected {'type': '<stream>.<created|updated|deleted>', 'data': {...}}")
    match = _STANDARD_TYPE.match(str(payload.get("type") or ""))
    if not match:
        raise Malformed("type must be '<stream>.<created|updated|deleted>'")
    data = payload.get("data")
    if not isinstance(data, dict) or not data:
        raise Malformed("data must be the record, or {'id': ...}, a JSON object")
    stamp = headers.get("webhook-timestamp", "")
    at = dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC) if stamp.isdigit() else None
    op = "delete" if match.group(2) == "deleted" else "upsert"
    if set(data) == {"id"}:
        # Id only ("thin" event): processing fetches the current record through the stream's detail_path.
        hint = Hint(match.group(1), _id(data["id"], "data.id"), op, at)
    else:
        hint = Hint(match.group(1), str(data.get("id") or ""), op, at, data)
    configured = _configured_streams(options)
    if configured is not None and hint.stream not in configured:
        return []  # a stream this connection does not sync: ignored, as other vendors' unsynced objects
    return [hint]


HINTS: dict[str, Callable[[Any, Mapping[str, Any], Headers], list[Hint]]] = {
    "hubspot": _hubspot_hints,
    "quickbooks": _quickbooks_hints,
    "procore": _procore_hints,
    "rest": _standard_hints,
}


def decode(body: bytes) -> Any:
    """The JSON body, or Malformed."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed(f"body is not JSON: {exc}") from None


def hints(kind: str, payload: Any, options: Mapping[str, Any], headers: Headers) -> list[Hint]:
    """What ``payload`` says changed, for a connection of ``kind`` with ``options``; or Malformed."""
    return HINTS[kind](payload, options, headers)
