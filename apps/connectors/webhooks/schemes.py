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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

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
    """One record that changed upstream (``upsert``: fetch it, or use ``data``), was deleted, or absorbed
    others (``merge``: ``external_id`` survives, fetched like an upsert; ``merged`` are gone into it)."""

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


# The characters HubSpot's v3 instructions list to decode in the request URI before signing ("Validate the v3
# request signature", https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests).
_HUBSPOT_DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def hubspot_signed_uris(uri: str) -> tuple[str, ...]:
    """The forms of ``uri`` a v3 signature may cover: with the documented characters decoded, and fully
    percent-decoded (what HubSpot's own examples do with a URL decoder). Equal for a plain URI."""
    listed = _PERCENT.sub(lambda m: _HUBSPOT_DECODED.get(m.group(0).upper(), m.group(0)), uri)
    return tuple(dict.fromkeys((listed, unquote(uri))))


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> bytes:
    """base64(HMAC-SHA256(client secret, method + URI + body + timestamp)), UTF-8 (HubSpot's v3 scheme)."""
    return _b64_hmac(secret.encode(), method.upper().encode() + uri.encode() + body + timestamp.encode())


def _verify_hubspot(inbound: Inbound, secrets: list[str]) -> None:
    """v3 only (``X-HubSpot-Signature-v3``): v1 and v2 sign no timestamp, so a captured request could be
    replayed forever; Fulcrum never accepted them."""
    signature = _header(inbound, "x-hubspot-signature-v3").encode()
    stamp = _header(inbound, "x-hubspot-request-timestamp")
    if not stamp.isdigit():
        raise Rejected("X-HubSpot-Request-Timestamp is not epoch milliseconds")
    _check_time(int(stamp) / 1000, inbound.now)
    candidates = (
        hubspot_v3_signature(secret, inbound.method, signed, inbound.body, stamp)
        for secret in secrets
        for uri in inbound.uris
        for signed in hubspot_signed_uris(uri)
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
    "docai": _verify_standard,  # the document tool signs with Standard Webhooks
}


def verify(kind: str, inbound: Inbound, secrets: list[str]) -> None:
    """Raise Rejected unless ``inbound`` is signed with one of ``secrets`` (and fresh, where signed so)."""
    if not secrets:
        raise Rejected("the connection has no webhook secret")
    VERIFIERS[kind](inbound, secrets)


# ---- event ids ------------------------------------------------------------------------------------------


def event_id(kind: str, headers: Headers, body: bytes, payload: Any = None) -> str:
    """The delivery's identity for the inbox: the vendor's event id where it has one, else the body's hash.

    HubSpot: a hash of the batch's events, each without ``attemptNumber`` (see :func:`hubspot_event_key`);
    QuickBooks: see :func:`split` (one row per event); Procore: the event's ``ulid`` / ``id``; Standard
    Webhooks: ``webhook-id``.
    """
    if kind in ("rest", "docai"):
        msg_id = headers.get("webhook-id", "").strip()
        if msg_id:
            return msg_id if len(msg_id) <= _MAX_EVENT_ID else body_hash(msg_id.encode())
    elif kind == "hubspot" and isinstance(payload, list) and payload:
        keys = sorted({hubspot_event_key(event) for event in payload})
        return "hubspot:" + hashlib.sha256(",".join(keys).encode()).hexdigest()
    elif kind == "procore" and isinstance(payload, dict):
        value = str(payload.get("ulid") or payload.get("id") or "")
        if value:
            return value[:_MAX_EVENT_ID]
    return body_hash(body)


def hubspot_event_key(event: Any) -> str:
    """One HubSpot event's identity: its content without ``attemptNumber``.

    HubSpot documents ``eventId`` as "not guaranteed to be unique" and sends a retried event again with
    ``attemptNumber`` raised, possibly in a batch of other events. So a redelivered batch (same events, any
    order, any attempt) is the same delivery, a new batch that shares some events with an earlier one is a
    new delivery (its shared events are applied again, harmlessly: every write is version-guarded), and two
    different events that happen to share an ``eventId`` never hide each other.
    """
    if isinstance(event, dict):
        event = {k: v for k, v in event.items() if k != "attemptNumber"}
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


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


# CRM object type ids in ``object.*`` events' ``objectTypeId`` ("0-2" is a company): HubSpot's generic webhook
# subscriptions (https://developers.hubspot.com/changelog/public-beta-generic-webhook-subscriptions).
HUBSPOT_COMPANY_TYPE = "0-2"
# Subscription types: HubSpot's webhooks API ``SubscriptionCreateRequest.eventType`` enum
# (HubSpot-public-api-spec-collection, PublicApiSpecs/Webhooks/Webhooks/Rollouts/147891/v3/webhooks.json).
_HUBSPOT_UPSERT = {"creation", "propertyChange", "restore"}


def _hubspot_events(payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
    """Every event of a batch applied or counted as ignored; only a body that is no array is Malformed.

    HubSpot batches mix subscription types: company events, other objects' events, ``associationChange``
    (``fromObjectId``/``toObjectId``, no ``objectId``), merges (``primaryObjectId``, ``mergedObjectIds``,
    ``newObjectId``) and the generic ``object.*`` events naming their type in ``objectTypeId``. Refusing the
    batch for one event it cannot read would make HubSpot retry it and finally drop the good events in it.
    """
    if not isinstance(payload, list) or not payload:
        raise Malformed("expected a non-empty JSON array of events")
    hints: list[Hint] = []
    ignored: Counter[str] = Counter()
    for event in payload:
        try:
            hint, label = _hubspot_event(event)
        except Malformed as exc:
            hint, label = None, f"unreadable: {exc}"
        if hint is None:
            ignored[label] += 1
        else:
            hints.append(hint)
    return Events(hints, dict(ignored))


def _hubspot_event(event: Any) -> tuple[Hint | None, str]:
    """One event's hint, or None and the type it is counted under as ignored."""
    if not isinstance(event, dict):
        raise Malformed("an event is not an object")
    subscription = event.get("subscriptionType")
    if not isinstance(subscription, str) or "." not in subscription:
        raise Malformed("subscriptionType is not '<object>.<event>'")
    obj, _, action = subscription.partition(".")
    if obj == "object":
        type_id = str(event.get("objectTypeId") or "")
        if type_id != HUBSPOT_COMPANY_TYPE:
            return None, f"{subscription} ({type_id or 'no objectTypeId'})"
        obj = "company"
    if obj != "company" or action == "associationChange":
        return None, subscription  # contacts, deals, ...: not synced; company associations: not held
    at = _time(event.get("occurredAt"))
    if action == "merge":
        return _hubspot_merge(event, at), subscription
    object_id = _id(event.get("objectId"), "objectId")
    if action == "deletion":
        return Hint("companies", object_id, "delete", at), subscription
    if action in _HUBSPOT_UPSERT:
        return Hint("companies", object_id, "upsert", at), subscription
    return None, subscription


def _hubspot_merge(event: dict[str, Any], at: dt.datetime | None) -> Hint:
    """The surviving company (``newObjectId`` when the merge made a new record, else ``primaryObjectId``,
    else ``objectId``) and the ones merged into it (HubSpot changelog "New subscription types for webhooks":
    https://developers.hubspot.com/changelog/new-subscription-types-for-webhooks)."""
    candidates = (event.get("newObjectId"), event.get("primaryObjectId"), event.get("objectId"))
    survivor = _id(next((c for c in candidates if c not in (None, "")), None), "merge survivor id")
    merged = event.get("mergedObjectIds") or []
    if not isinstance(merged, list):
        raise Malformed("mergedObjectIds is not a list")
    gone = [_id(other, "mergedObjectIds") for other in merged]
    if event.get("primaryObjectId") not in (None, ""):
        gone.append(_id(event["primaryObjectId"], "primaryObjectId"))
    return Hint(
        "companies", survivor, "merge", at, merged=tuple(dict.fromkeys(g for g in gone if g != survivor))
    )


QBO_STREAMS = {
    "Customer": "customers",
    "Invoice": "invoices",
    "Bill": "bills",
    "Purchase": "purchases",
    "Estimate": "estimates",
}
# The operations of Intuit's webhooks entity table (Create, Update, Delete, Merge, Void, Emailed):
# https://developer.intuit.com/app/developer/qbo/docs/develop/webhooks (Step 3). A void or an e-mailing
# changes the record (TotalAmt, EmailStatus): fetched like an update.
QBO_UPSERT_OPERATIONS = frozenset({"Create", "Update", "Void", "Emailed"})
QBO_OPERATIONS = QBO_UPSERT_OPERATIONS | {"Delete", "Merge"}
# CloudEvents ``type`` is ``qbo.<entity>.<verb>.v<N>`` (Intuit's example: ``qbo.account.created.v1``,
# https://blogs.intuit.com/2025/11/12/upcoming-change-to-webhooks-payload-structure/). Only ``created`` is
# shown there; the other verbs are the legacy operations in the same past tense (see docs/vendors).
QBO_CLOUD_VERBS = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "voided": "Void",
    "emailed": "Emailed",
}
_QBO_CLOUD_TYPE = re.compile(r"^qbo\.([A-Za-z0-9]+)\.([A-Za-z]+)\.v\d+$")


@dataclass(frozen=True)
class QboEvent:
    """One QuickBooks change event, from either format, with its inbox identity (``key``).

    ``ignored`` names why it changes nothing here (``entity Payment``, ``operation Archived``,
    ``realm 123``); ``deleted_id`` is the merged-away record of a ``Merge``; ``raw`` is the event as sent.
    """

    key: str
    realm: str
    entity: str
    entity_id: str
    operation: str
    at: dt.datetime | None
    deleted_id: str
    raw: dict[str, Any]
    cloud: bool
    ignored: str = ""


def _bounded(key: str) -> str:
    return key if len(key) <= _MAX_EVENT_ID else body_hash(key.encode())


def _qbo_ignored(entity: str, operation: str, realm: str, options: Mapping[str, Any]) -> str:
    wanted = str(options.get("realm_id") or "")
    if wanted and realm != wanted:
        return f"realm {realm}"
    if entity not in QBO_STREAMS:
        return f"entity {entity}"
    if operation not in QBO_OPERATIONS:
        return f"operation {operation}"
    return ""


def _cloud_events(events: list[Any], options: Mapping[str, Any]) -> list[QboEvent]:
    """Intuit's CloudEvents: a JSON array of events (``specversion``, ``id``, ``type``, ``time``,
    ``intuitentityid``, ``intuitaccountid``, ``data``), one entity change each. The ``intuit-signature`` is
    computed as for the legacy format (Intuit's SDKs verify both with the same function)."""
    out = []
    for index, event in enumerate(events):
        where = f"event {index}"
        if not isinstance(event, dict):
            raise Malformed(f"{where} is not an object")
        for name in ("specversion", "id", "type"):
            if not isinstance(event.get(name), str) or not event[name].strip():
                raise Malformed(f"{where}: CloudEvents attribute {name!r} must be a non-empty string")
        event_type = event["type"].strip()
        data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
        match = _QBO_CLOUD_TYPE.match(event_type)
        entity_id = ""
        realm = str(event.get("intuitaccountid") or "")
        if match:
            entity_id = _id(event.get("intuitentityid"), f"{where}: intuitentityid")
            if not realm:
                raise Malformed(f"{where}: intuitaccountid (the realm) is missing")
        noun, verb = (match.group(1), match.group(2).lower()) if match else ("", "")
        entity = next((name for name in QBO_STREAMS if name.lower() == noun.lower()), noun)
        operation = QBO_CLOUD_VERBS.get(verb, verb)
        # Not documented for CloudEvents: where a merge names the merged-away record. The legacy field's
        # name is read from ``data`` or as an extension attribute when present.
        deleted = data.get("deletedId") or event.get("deletedid") or ""
        ignored = f"type {event_type}" if not match else _qbo_ignored(entity, operation, realm, options)
        out.append(
            QboEvent(
                key=_bounded("ce:" + event["id"].strip()),
                realm=realm,
                entity=entity,
                entity_id=entity_id,
                operation=operation,
                at=_time(event.get("time")),
                deleted_id=str(deleted) if isinstance(deleted, str | int) else "",
                raw=event,
                cloud=True,
                ignored=ignored,
            )
        )
    return out


def _legacy_events(notifications: list[Any], options: Mapping[str, Any]) -> list[QboEvent]:
    """The legacy ``eventNotifications`` format (``realmId``, ``dataChangeEvent.entities[]`` with
    ``name``, ``id``, ``operation``, ``lastUpdated`` and, for merges, ``deletedId``):
    https://developer.intuit.com/app/developer/qbo/docs/develop/webhooks/managing-webhooks-notifications.
    It has no event id: an event is identified by what it says (the same change delivered twice is the
    same event)."""
    out = []
    for index, notification in enumerate(notifications):
        if not isinstance(notification, dict):
            raise Malformed(f"eventNotifications[{index}] is not an object")
        entities = (notification.get("dataChangeEvent") or {}).get("entities")
        if not isinstance(entities, list):
            raise Malformed(f"eventNotifications[{index}].dataChangeEvent.entities must be a list")
        realm = str(notification.get("realmId") or "")
        for number, entity in enumerate(entities):
            where = f"eventNotifications[{index}].entities[{number}]"
            if not isinstance(entity, dict) or not isinstance(entity.get("name"), str):
                raise Malformed(f"{where}: expected an object with name, id and operation")
            entity_id = _id(entity.get("id"), f"{where}.id")
            operation = str(entity.get("operation") or "")
            deleted = entity.get("deletedId")
            identity = [realm, entity["name"], entity_id, operation, entity.get("lastUpdated"), deleted]
            digest = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()
            out.append(
                QboEvent(
                    key="qbo:" + digest[:40],
                    realm=realm,
                    entity=entity["name"],
                    entity_id=entity_id,
                    operation=operation,
                    at=_time(entity.get("lastUpdated")),
                    deleted_id=str(deleted) if isinstance(deleted, str | int) and str(deleted) else "",
                    raw=entity,
                    cloud=False,
                    ignored=_qbo_ignored(entity["name"], operation, realm, options),
                )
            )
    return out


def quickbooks_events(payload: Any, options: Mapping[str, Any]) -> list[QboEvent]:
    """Every event of a QuickBooks delivery in either format, in order; Malformed for any other shape."""
    if isinstance(payload, dict) and "specversion" in payload:
        payload = [payload]  # one event in CloudEvents' structured mode
    if isinstance(payload, list):
        if not payload:
            raise Malformed("expected a non-empty JSON array of CloudEvents")
        return _cloud_events(payload, options)
    if isinstance(payload, dict) and isinstance(payload.get("eventNotifications"), list):
        return _legacy_events(payload["eventNotifications"], options)
    raise Malformed("expected a JSON array of CloudEvents or {'eventNotifications': [...]}")


def _quickbooks_hints(payload: Any, options: Mapping[str, Any], headers: Headers) -> list[Hint]:
    hints = []
    for event in quickbooks_events(payload, options):
        if event.ignored:
            continue
        stream = QBO_STREAMS[event.entity]
        if event.operation == "Delete":
            hints.append(Hint(stream, event.entity_id, "delete", event.at))
            continue
        if event.operation == "Merge" and event.deleted_id and event.deleted_id != event.entity_id:
            # The survivor is fetched; the merged-away record is gone and points to it.
            hints.append(Hint(stream, event.entity_id, "merge", event.at, merged=(event.deleted_id,)))
        else:
            hints.append(Hint(stream, event.entity_id, "upsert", event.at))
    return hints


def _quickbooks_split(payload: Any, body: bytes) -> list[tuple[str, bytes]]:
    """One inbox row per event: a batch is stored event by event, so a redelivered event (alone or in
    another batch) is a duplicate. A single-event delivery keeps its raw, signed bytes."""
    events = quickbooks_events(payload, {})
    if len(events) == 1:
        return [(events[0].key, body)]
    parts = []
    for event in events:
        if event.cloud:
            part: Any = [event.raw]
        else:
            part = {
                "eventNotifications": [{"realmId": event.realm, "dataChangeEvent": {"entities": [event.raw]}}]
            }
        parts.append((event.key, json.dumps(part, separators=(",", ":")).encode()))
    return parts or [(body_hash(body), body)]


def _quickbooks_ignored(payload: Any, options: Mapping[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in quickbooks_events(payload, options):
        if event.ignored:
            counts[event.ignored] = counts.get(event.ignored, 0) + 1
    return counts


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


def _docai_events(
    payload: Any, options: Mapping[str, Any], headers: Headers
) -> tuple[list[Hint], dict[str, int]]:
    from apps.connectors.kinds.docai import Malformed as BadAnalysis
    from apps.connectors.kinds.docai import document_events, mapping_from_options

    try:
        found, skipped = document_events(payload, headers, mapping_from_options(options))
    except BadAnalysis as exc:
        raise Malformed(str(exc)) from None
    stamp = headers.get("webhook-timestamp", "")
    at = dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC) if stamp.isdigit() else None
    return [Hint("documents", doc_id, op, at, data) for op, doc_id, data in found], skipped


HINTS: dict[str, Callable[[Any, Mapping[str, Any], Headers], list[Hint]]] = {
    "quickbooks": _quickbooks_hints,
    "procore": _procore_hints,
    "rest": _standard_hints,
    "docai": lambda payload, options, headers: _docai_events(payload, options, headers)[0],
}


def decode(body: bytes) -> Any:
    """The JSON body, or Malformed."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed(f"body is not JSON: {exc}") from None


def events(kind: str, payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
    """What ``payload`` says changed and what it holds that is not applied; or Malformed."""
    if kind == "hubspot":
        return _hubspot_events(payload, options, headers)
    return Events(HINTS[kind](payload, options, headers), ignored(kind, payload, options))


def hints(kind: str, payload: Any, options: Mapping[str, Any], headers: Headers) -> list[Hint]:
    """What ``payload`` says changed, for a connection of ``kind`` with ``options``; or Malformed."""
    return events(kind, payload, options, headers).hints


# Kinds whose authentic but malformed deliveries are kept (status rejected, signature_valid) for forensics.
KEEP_MALFORMED = frozenset({"quickbooks", "docai"})
SPLITTERS: dict[str, Callable[[Any, bytes], list[tuple[str, bytes]]]] = {"quickbooks": _quickbooks_split}
IGNORED: dict[str, Callable[[Any, Mapping[str, Any]], dict[str, int]]] = {
    "quickbooks": _quickbooks_ignored,
    "docai": lambda payload, options: _docai_events(payload, options, {})[1],
}


def split(kind: str, headers: Headers, body: bytes, payload: Any) -> list[tuple[str, bytes]]:
    """The inbox rows of one verified delivery: ``(event id, body)`` each. Kinds whose batches carry
    several independent events (QuickBooks) store one row per event; the others one row per delivery."""
    splitter = SPLITTERS.get(kind)
    if splitter is None:
        return [(event_id(kind, headers, body, payload), body)]
    return splitter(payload, body)


def ignored(kind: str, payload: Any, options: Mapping[str, Any]) -> dict[str, int]:
    """Events of a delivery that change nothing here, counted by why (``{"entity Payment": 1}``)."""
    counter = IGNORED.get(kind)
    return counter(payload, options) if counter else {}
