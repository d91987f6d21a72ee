"""The document tool's webhook edge: Standard-Webhooks-signed ``document.analyzed`` / ``document.deleted``.

Verification is the Standard Webhooks scheme (``schemes.verify_standard``); the inbox id is ``webhook-id``.
An analysis is checked when the delivery arrives, so a malformed one is answered 400 (and kept) before it is
queued; another event type is accepted and counted as ignored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from apps.connectors.webhooks.schemes import Events, Headers, Hint
from apps.connectors.webhooks.schemes import Malformed as BadBody

from . import Malformed, document_record, mapping_from_options

ANALYZED = "document.analyzed"
DELETED = "document.deleted"


def document_events(
    payload: Any, headers: Mapping[str, str], mapping: Mapping[str, str]
) -> tuple[list[tuple[str, str, dict[str, Any] | None]], dict[str, int]]:
    """(``[(op, id, record or None)]``, ignored by type) for one delivery; Malformed for a bad body.

    ``document.analyzed`` carries the whole analysis (checked here, so a malformed one is refused with 400
    before it is queued); ``document.deleted`` only the id. Another type is counted as ignored."""
    if not isinstance(payload, dict):
        raise Malformed('expected {"type": "document.analyzed", "data": {"id": ..., "analyzeResult": {...}}}')
    kind = payload.get("type")
    data = payload.get("data")
    if not isinstance(kind, str) or not kind:
        raise Malformed("type must be a string")
    if kind not in (ANALYZED, DELETED):
        return [], {f"type {kind}"[:100]: 1}
    if not isinstance(data, dict):
        raise Malformed("data must be an object")
    doc_id = data.get("id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or not str(doc_id).strip():
        raise Malformed("data.id must be the tool's document id")
    if kind == DELETED:
        return [("delete", str(doc_id).strip(), None)], {}
    stamp = headers.get("webhook-timestamp", "")
    at = (
        dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC) if stamp.isdigit() else dt.datetime.now(dt.UTC)
    ).isoformat()
    record = {"lastUpdatedDateTime": at, **data}
    document_record(record, mapping)  # refuse a malformed analysis now (400), not in the worker
    return [("upsert", str(doc_id).strip(), record)], {}


def events(payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
    """The delivery's hints (stream ``documents``) and its ignored types; the receiver's Malformed for a
    body or an analysis out of shape."""
    try:
        found, ignored = document_events(payload, headers, mapping_from_options(options))
    except Malformed as exc:
        raise BadBody(str(exc)) from None
    stamp = headers.get("webhook-timestamp", "")
    at = dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC) if stamp.isdigit() else None
    return Events([Hint("documents", doc_id, op, at, data) for op, doc_id, data in found], ignored)
