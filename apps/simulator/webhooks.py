"""Webhook deliveries signed and shaped as each vendor sends them; standard library only.

Each ``*_delivery`` function returns ``(headers, body)`` ready to POST: the body is the exact bytes that were
signed. ``send`` posts them over HTTP. ``change_record`` edits one upstream record (and bumps its modified
time) so a test can "change a record upstream, then send its webhook" with the matching ``*_event``.

Schemes:

* HubSpot v3: ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(client secret, method + URI + body +
  timestamp)), ``X-HubSpot-Request-Timestamp`` in epoch milliseconds; the body is a JSON array of events.
* QuickBooks: ``intuit-signature`` = base64(HMAC-SHA256(verifier token, body)) for both of Intuit's body
  formats: CloudEvents (a JSON array of events with ``specversion``, ``id``, ``source``, ``type``
  ``qbo.<entity>.<verb>.v1``, ``time``, ``intuitentityid``, ``intuitaccountid``, ``data``; mandatory for
  apps since 2026, https://blogs.intuit.com/2025/11/12/upcoming-change-to-webhooks-payload-structure/) and
  the legacy ``{"eventNotifications": [{"realmId", "dataChangeEvent": {"entities": [...]}}]}``
  (https://developer.intuit.com/app/developer/qbo/docs/develop/webhooks/managing-webhooks-notifications);
  ids only.
* Procore: the ``Authorization`` header carries the value configured on the hook; one event per POST.
* Standard Webhooks (``rest``): ``webhook-id``, ``webhook-timestamp`` (epoch seconds) and
  ``webhook-signature`` ``v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`` (space-separated for several
  keys); the secret is ``whsec_`` + base64(key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import unquote

from .common import hubspot_time, procore_time, qbo_time
from .records import PROCORE_COMPANY_ID, REALM_ID, Company

Headers = dict[str, str]

HUBSPOT_PORTAL_ID = 62515
HUBSPOT_APP_ID = 1160452
QBO_ENTITY_NAMES = {
    "customer": "Customer",
    "vendor": "Vendor",
    "invoice": "Invoice",
    "bill": "Bill",
    "purchase": "Purchase",
    "estimate": "Estimate",
}
# Procore webhook resource names of the records the simulator serves (company level: Projects, Company
# Vendors; project level: Tasks, Change Order Packages, Submittals).
PROCORE_RESOURCE_NAMES = {
    "project": "Projects",
    "task": "Tasks",
    "milestone": "Tasks",
    "change_order": "Change Order Packages",
    "submittal": "Submittals",
    "vendor": "Company Vendors",
}
_event_ids = itertools.count(int(time.time()) * 1000)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _b64_hmac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


# ---- HubSpot ------------------------------------------------------------------------------------------


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """v3: over the URI with its percent-encoded characters decoded, as HubSpot signs it."""
    message = method.upper().encode() + unquote(uri).encode() + body + timestamp.encode()
    return _b64_hmac(secret.encode(), message)


def hubspot_delivery(
    url: str,
    secret: str,
    events: list[dict[str, Any]],
    timestamp: int | None = None,
    method: str = "POST",
) -> tuple[Headers, bytes]:
    """A batch of HubSpot events signed v3 for ``url`` (the full URI HubSpot posts to)."""
    body = _json(events)
    stamp = str(timestamp if timestamp is not None else int(time.time() * 1000))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)",
        "X-HubSpot-Signature-Version": "v3",
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_signature(secret, method, url, body, stamp),
    }
    return headers, body


def hubspot_event(
    object_id: str | int,
    subscription_type: str = "company.propertyChange",
    occurred_at: int | None = None,
    event_id: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One HubSpot event; ``occurred_at`` in epoch milliseconds."""
    event: dict[str, Any] = {
        "eventId": event_id if event_id is not None else next(_event_ids),
        "subscriptionId": 2001,
        "portalId": HUBSPOT_PORTAL_ID,
        "appId": HUBSPOT_APP_ID,
        "occurredAt": occurred_at if occurred_at is not None else int(time.time() * 1000),
        "subscriptionType": subscription_type,
        "attemptNumber": 0,
        "objectId": int(object_id),
        "changeSource": "CRM",
    }
    if subscription_type.endswith("propertyChange"):
        event.update({"propertyName": "name", "propertyValue": ""})
    event.update(extra)
    return event


# Fields of the event kinds HubSpot adds to the same batches (changelog "New subscription types for
# webhooks" and "Public Beta: Generic Webhook Subscriptions"): no ``objectId`` on association changes,
# ``objectTypeId`` on the generic ``object.*`` events ("0-1" contacts, "0-2" companies).
HUBSPOT_OBJECT_TYPES = {"contact": "0-1", "company": "0-2", "deal": "0-3", "ticket": "0-5"}


def hubspot_association_change(
    from_id: str | int,
    to_id: str | int,
    association_type: str = "COMPANY_TO_CONTACT",
    removed: bool = False,
    subscription_type: str = "company.associationChange",
    **extra: Any,
) -> dict[str, Any]:
    """An association added (or ``removed``) between two objects: ``fromObjectId``/``toObjectId``."""
    event = hubspot_event(0, subscription_type, **extra)
    del event["objectId"]
    event.update(
        {
            "associationType": association_type,
            "fromObjectId": int(from_id),
            "toObjectId": int(to_id),
            "associationRemoved": removed,
            "isPrimaryAssociation": False,
        }
    )
    return event


def hubspot_merge(
    primary_id: str | int,
    merged_ids: list[str | int],
    new_id: str | int | None = None,
    subscription_type: str = "company.merge",
    **extra: Any,
) -> dict[str, Any]:
    """Companies ``merged_ids`` merged into ``primary_id`` (or into a new record ``new_id``)."""
    survivor = new_id if new_id is not None else primary_id
    event = hubspot_event(survivor, subscription_type, **extra)
    event.update(
        {
            "primaryObjectId": int(primary_id),
            "mergedObjectIds": [int(i) for i in merged_ids],
            "newObjectId": int(survivor),
            "numberOfPropertiesMoved": 3,
        }
    )
    return event


def hubspot_object_event(
    object_type: str, object_id: str | int, action: str = "propertyChange", **extra: Any
) -> dict[str, Any]:
    """A generic ``object.<action>`` event for ``object_type`` (``company``, ``contact``, ...)."""
    event = hubspot_event(object_id, f"object.{action}", **extra)
    event["objectTypeId"] = HUBSPOT_OBJECT_TYPES.get(object_type, object_type)
    return event


def hubspot_mixed_batch(company_id: str | int, other_company_id: str | int) -> list[dict[str, Any]]:
    """One batch as HubSpot sends a busy portal's: a company change beside a contact's, an association
    change, a merge of ``other_company_id`` into ``company_id`` and generic ``object.*`` events."""
    return [
        hubspot_event(company_id, "company.propertyChange"),
        hubspot_event(901, "contact.creation"),
        hubspot_association_change(company_id, 902),
        hubspot_merge(company_id, [other_company_id]),
        hubspot_object_event("company", company_id, "propertyChange"),
        hubspot_object_event("contact", 903, "creation"),
    ]


# ---- QuickBooks ---------------------------------------------------------------------------------------


def qbo_signature(verifier: str, body: bytes) -> str:
    return _b64_hmac(verifier.encode(), body)


def qbo_delivery(
    verifier: str, entities: list[dict[str, Any]], realm_id: str = REALM_ID
) -> tuple[Headers, bytes]:
    """One QuickBooks notification for ``realm_id`` carrying ``entities`` (see ``qbo_entity``)."""
    payload = {"eventNotifications": [{"realmId": realm_id, "dataChangeEvent": {"entities": entities}}]}
    body = _json(payload)
    return {"Content-Type": "application/json", "intuit-signature": qbo_signature(verifier, body)}, body


def qbo_entity(
    name: str,
    entity_id: str | int,
    operation: str = "Update",
    last_updated: int | None = None,
    deleted_id: str | int | None = None,
) -> dict[str, Any]:
    """One changed entity: ``name`` as QuickBooks spells it (``Invoice``) or our object type (``invoice``);
    a ``Merge`` names the merged-away record in ``deletedId`` (Intuit's SDKs: "Deleted entityId for merge
    operations")."""
    ms = last_updated if last_updated is not None else int(time.time() * 1000)
    entity = {
        "name": QBO_ENTITY_NAMES.get(name, name),
        "id": str(entity_id),
        "operation": operation,
        "lastUpdated": qbo_time(ms),
    }
    if deleted_id is not None:
        entity["deletedId"] = str(deleted_id)
    return entity


# The legacy operation as the CloudEvents ``type`` verb (``Create`` -> ``qbo.<entity>.created.v1``).
QBO_CLOUD_VERBS = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Merge": "merged",
    "Void": "voided",
    "Emailed": "emailed",
}
# The ``source`` of Intuit's example event (an opaque app identifier).
QBO_CLOUD_SOURCE = "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU="


def qbo_cloud_event(
    name: str,
    entity_id: str | int,
    operation: str = "Update",
    time_ms: int | None = None,
    realm_id: str = REALM_ID,
    event_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One CloudEvents-format event, shaped as Intuit's example (``qbo.account.created.v1``)."""
    ms = time_ms if time_ms is not None else int(time.time() * 1000)
    entity = QBO_ENTITY_NAMES.get(name, name)
    verb = QBO_CLOUD_VERBS.get(operation, operation.lower())
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": QBO_CLOUD_SOURCE,
        "type": f"qbo.{entity.lower()}.{verb}.v1",
        "datacontenttype": "application/json",
        "time": hubspot_time(ms),  # RFC 3339 UTC, as Intuit's "2025-09-10T21:31:25.179851517Z"
        "intuitentityid": str(entity_id),
        "intuitaccountid": realm_id,
        "data": data or {},
    }


def qbo_cloud_delivery(verifier: str, events: list[dict[str, Any]]) -> tuple[Headers, bytes]:
    """A CloudEvents batch (see ``qbo_cloud_event``) signed like every QuickBooks delivery."""
    body = _json(events)
    return {
        "Content-Type": "application/cloudevents+json",  # as Intuit warns CloudEvents may arrive
        "intuit-signature": qbo_signature(verifier, body),
    }, body


# ---- Procore ------------------------------------------------------------------------------------------


def procore_delivery(authorization: str, event: dict[str, Any]) -> tuple[Headers, bytes]:
    """One Procore event with the hook's configured Authorization header value."""
    return {"Content-Type": "application/json", "Authorization": authorization}, _json(event)


def procore_event(
    resource_name: str,
    resource_id: int,
    event_type: str = "update",
    project_id: int | None = None,
    timestamp: int | None = None,
    company_id: int = PROCORE_COMPANY_ID,
    payload_version: str = "v2.0",
) -> dict[str, Any]:
    """One event in a documented payload format (developers.procore.com/documentation/webhooks):
    ``v2.0`` (legacy), ``v3.0`` (adds ``related_resources``) or ``v4.0`` (string ids, ``resource_type``,
    ``reason``). ``resource_name`` as Procore spells it (``Change Order Packages``) or our object type."""
    ms = timestamp if timestamp is not None else int(time.time() * 1000)
    name = PROCORE_RESOURCE_NAMES.get(resource_name, resource_name)
    ulid = uuid.uuid4().hex.upper()[:26]
    user_id = 7001
    if payload_version == "v4.0":
        return {
            "id": ulid,
            "timestamp": procore_time(ms).replace("Z", ".000000Z"),
            "reason": event_type,
            "company_id": str(company_id),
            "project_id": str(project_id) if project_id is not None else None,
            "user_id": str(user_id),
            "resource_type": name,
            "resource_id": str(resource_id),
        }
    event: dict[str, Any] = {
        "id": next(_event_ids),
        "ulid": ulid,
        "timestamp": procore_time(ms).replace("Z", ".000000Z"),
        "metadata": {
            "source_user_id": user_id,
            "source_project_id": project_id,
            "source_operation_id": None,
            "source_company_id": company_id,
            "source_application_id": None,
        },
        "user_id": user_id,
        "company_id": company_id,
        "project_id": project_id,
        "api_version": payload_version,
        "event_type": event_type,
        "resource_name": name,
        "resource_id": resource_id,
    }
    if payload_version == "v3.0":
        event["related_resources"] = []
    return event


# ---- Standard Webhooks ----------------------------------------------------------------------------------


def new_standard_secret(seed: int | None = None) -> str:
    """A ``whsec_`` secret (24 random bytes; deterministic for a seed)."""
    key = (
        random.Random(seed).randbytes(24) if seed is not None else uuid.uuid4().bytes + uuid.uuid4().bytes[:8]
    )
    return "whsec_" + base64.b64encode(key).decode()


def standard_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return "v1," + _b64_hmac(key, f"{msg_id}.{timestamp}.".encode() + body)


def standard_delivery(
    secrets: str | list[str],
    event_type: str,
    data: dict[str, Any],
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[Headers, bytes]:
    """``{"type", "data"}`` signed with every secret given (as a sender does while rotating keys)."""
    body = _json({"type": event_type, "data": data})
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    keys = [secrets] if isinstance(secrets, str) else secrets
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": " ".join(standard_signature(k, msg_id, stamp, body) for k in keys),
    }
    return headers, body


def standard_event_delivery(
    secrets: str | list[str],
    event: dict[str, Any],
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[Headers, bytes]:
    """``event`` (``{"type", "data"}``, e.g. from ``generic.rest_event``) signed as ``standard_delivery``."""
    return standard_delivery(secrets, event["type"], event["data"], msg_id=msg_id, timestamp=timestamp)


# ---- upstream changes paired with their events --------------------------------------------------------


def change_record(
    company: Company, system: str, object_type: str, record_id: str | int, seed: int = 1, **fields: Any
) -> Any:
    """Edit one upstream record (``fields``, or a realistic mutation) and bump its modified time.

    ``system`` ``rest``: the generic API, which serves Procore's records.
    """
    from .mutations import apply_mutation

    system = "procore" if system.lower() == "rest" else system

    with company.lock:
        table = company.table(system, object_type)
        record = table[int(record_id) if system.lower() == "procore" else str(record_id)]
        if fields:
            for name, value in fields.items():
                setattr(record, name, value)
        else:
            apply_mutation(company, system, object_type, record, random.Random(seed))
        record.updated = company.write_time()
        if hasattr(record, "sync_token"):
            record.sync_token += 1
        company.changed()
        return record


def event_for(
    system: str, object_type: str, record: Any, operation: str = "update", payload_version: str = "v2.0"
) -> dict[str, Any]:
    """The vendor's event for ``record`` (``operation``: create / update / delete; Procore's
    ``payload_version``: v2.0, v3.0 or v4.0)."""
    op = operation.lower()
    if system == "hubspot":
        kind = {"create": "creation", "update": "propertyChange", "delete": "deletion"}[op]
        return hubspot_event(record.id, f"{object_type}.{kind}", occurred_at=record.updated)
    if system == "quickbooks":
        return qbo_entity(object_type, record.id, op.capitalize(), last_updated=record.updated)
    if system == "quickbooks-cloudevents":
        return qbo_cloud_event(object_type, record.id, op.capitalize(), time_ms=record.updated)
    if system == "rest":
        from .generic import rest_event

        return rest_event(object_type, record, op)
    if system == "procore":
        return procore_event(
            object_type,
            record.id,
            op,
            project_id=getattr(record, "project_id", None),
            timestamp=record.updated,
            payload_version=payload_version,
        )
    raise ValueError(f"no webhooks for {system}")


# ---- sending --------------------------------------------------------------------------------------------


def send(url: str, headers: Headers, body: bytes, timeout: float = 10.0) -> tuple[int, Any]:
    """POST a delivery; (status, decoded JSON answer or the text)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


__all__ = [
    "change_record",
    "event_for",
    "hubspot_association_change",
    "hubspot_delivery",
    "hubspot_event",
    "hubspot_merge",
    "hubspot_mixed_batch",
    "hubspot_object_event",
    "hubspot_signature",
    "new_standard_secret",
    "procore_delivery",
    "procore_event",
    "qbo_cloud_delivery",
    "qbo_cloud_event",
    "qbo_delivery",
    "qbo_entity",
    "qbo_signature",
    "send",
    "standard_delivery",
    "standard_event_delivery",
    "standard_signature",
]
