"""QuickBooks Online's webhook edge: ``intuit-signature``, CloudEvents and legacy events, one inbox row each.

Pure functions (no database, no I/O); ``QuickBooks`` exposes them as its ``ConnectorKind`` webhook hooks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apps.connectors.webhooks.schemes import (
    Events,
    Headers,
    Hint,
    Inbound,
    Malformed,
    Rejected,
    any_equal,
    b64_hmac,
    body_hash,
    bounded,
    count_ignored,
    event_ref,
    header,
    hint_time,
)


def verify(inbound: Inbound, secrets: list[str]) -> None:
    """``intuit-signature``: base64(HMAC-SHA256(verifier token, body)), for both payload formats
    (https://developer.intuit.com/app/developer/qbo/docs/develop/webhooks/managing-webhooks-notifications)."""
    signature = header(inbound, "intuit-signature").encode()
    if not any_equal((b64_hmac(s.encode(), inbound.body) for s in secrets), signature):
        raise Rejected("signature does not match")


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
            entity_id = event_ref(event.get("intuitentityid"), f"{where}: intuitentityid")
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
                key=bounded("ce:" + event["id"].strip()),
                realm=realm,
                entity=entity,
                entity_id=entity_id,
                operation=operation,
                at=hint_time(event.get("time")),
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
            entity_id = event_ref(entity.get("id"), f"{where}.id")
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
                    at=hint_time(entity.get("lastUpdated")),
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


def hint(event: QboEvent) -> Hint:
    """What one applied event asks of processing: fetch the record, tombstone it, or merge into it."""
    stream = QBO_STREAMS[event.entity]
    if event.operation == "Delete":
        return Hint(stream, event.entity_id, "delete", event.at)
    if event.operation == "Merge" and event.deleted_id and event.deleted_id != event.entity_id:
        # The survivor is fetched; the merged-away record is gone and points to it.
        return Hint(stream, event.entity_id, "merge", event.at, merged=(event.deleted_id,))
    return Hint(stream, event.entity_id, "upsert", event.at)


def events(payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
    """Every event of the delivery read once: applied ones as hints, the others counted by the reason each
    event carries (``QboEvent.ignored``), which is what ``WebhookDelivery.summary`` shows."""
    read = quickbooks_events(payload, options)
    return Events(
        [hint(event) for event in read if not event.ignored], count_ignored(e.ignored for e in read)
    )


def split(payload: Any, body: bytes) -> list[tuple[str, bytes]]:
    """One inbox row per event: a batch is stored event by event, so a redelivered event (alone or in
    another batch) is a duplicate. A single-event delivery keeps its raw, signed bytes."""
    read = quickbooks_events(payload, {})
    if len(read) == 1:
        return [(read[0].key, body)]
    parts = []
    for event in read:
        if event.cloud:
            part: Any = [event.raw]
        else:
            part = {
                "eventNotifications": [{"realmId": event.realm, "dataChangeEvent": {"entities": [event.raw]}}]
            }
        parts.append((event.key, json.dumps(part, separators=(",", ":")).encode()))
    return parts or [(body_hash(body), body)]
