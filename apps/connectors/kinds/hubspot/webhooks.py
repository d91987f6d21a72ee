"""HubSpot's webhook edge: the v3 signature over the decoded URI, and mixed batches read event by event.

Pure functions (no database, no I/O); ``HubSpot`` exposes them as its ``ConnectorKind`` webhook hooks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from apps.connectors.webhooks.schemes import (
    Events,
    Headers,
    Hint,
    Inbound,
    Malformed,
    Rejected,
    any_equal,
    b64_hmac,
    check_time,
    event_ref,
    header,
    hint_time,
)

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
    return b64_hmac(secret.encode(), method.upper().encode() + uri.encode() + body + timestamp.encode())


def verify(inbound: Inbound, secrets: list[str]) -> None:
    """v3 only (``X-HubSpot-Signature-v3``): v1 and v2 sign no timestamp, so a captured request could be
    replayed forever; Fulcrum never accepted them."""
    signature = header(inbound, "x-hubspot-signature-v3").encode()
    stamp = header(inbound, "x-hubspot-request-timestamp")
    if not stamp.isdigit():
        raise Rejected("X-HubSpot-Request-Timestamp is not epoch milliseconds")
    check_time(int(stamp) / 1000, inbound.now)
    candidates = (
        hubspot_v3_signature(secret, inbound.method, signed, inbound.body, stamp)
        for secret in secrets
        for uri in inbound.uris
        for signed in hubspot_signed_uris(uri)
    )
    if not any_equal(candidates, signature):
        raise Rejected("signature does not match")


def event_id(payload: Any) -> str:
    """A delivery's identity: a hash of its events' keys (:func:`event_key`), whatever their order."""
    keys = sorted({event_key(event) for event in payload})
    return "hubspot:" + hashlib.sha256(",".join(keys).encode()).hexdigest()


def event_key(event: Any) -> str:
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


# CRM object type ids in ``object.*`` events' ``objectTypeId`` ("0-2" is a company): HubSpot's generic webhook
# subscriptions (https://developers.hubspot.com/changelog/public-beta-generic-webhook-subscriptions).
HUBSPOT_COMPANY_TYPE = "0-2"
# Subscription types: HubSpot's webhooks API ``SubscriptionCreateRequest.eventType`` enum
# (HubSpot-public-api-spec-collection, PublicApiSpecs/Webhooks/Webhooks/Rollouts/147891/v3/webhooks.json).
_HUBSPOT_UPSERT = {"creation", "propertyChange", "restore"}


def events(payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
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
            hint, label = _event(event)
        except Malformed as exc:
            hint, label = None, f"unreadable: {exc}"
        if hint is None:
            ignored[label] += 1
        else:
            hints.append(hint)
    return Events(hints, dict(ignored))


def _event(event: Any) -> tuple[Hint | None, str]:
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
    at = hint_time(event.get("occurredAt"))
    if action == "merge":
        return _merge(event, at), subscription
    object_id = event_ref(event.get("objectId"), "objectId")
    if action == "deletion":
        return Hint("companies", object_id, "delete", at), subscription
    if action in _HUBSPOT_UPSERT:
        return Hint("companies", object_id, "upsert", at), subscription
    return None, subscription


def _merge(event: dict[str, Any], at: dt.datetime | None) -> Hint:
    """The surviving company (``newObjectId`` when the merge made a new record, else ``primaryObjectId``,
    else ``objectId``) and the ones merged into it (HubSpot changelog "New subscription types for webhooks":
    https://developers.hubspot.com/changelog/new-subscription-types-for-webhooks)."""
    candidates = (event.get("newObjectId"), event.get("primaryObjectId"), event.get("objectId"))
    survivor = event_ref(next((c for c in candidates if c not in (None, "")), None), "merge survivor id")
    merged = event.get("mergedObjectIds") or []
    if not isinstance(merged, list):
        raise Malformed("mergedObjectIds is not a list")
    gone = [event_ref(other, "mergedObjectIds") for other in merged]
    if event.get("primaryObjectId") not in (None, ""):
        gone.append(event_ref(event["primaryObjectId"], "primaryObjectId"))
    return Hint(
        "companies", survivor, "merge", at, merged=tuple(dict.fromkeys(g for g in gone if g != survivor))
    )
