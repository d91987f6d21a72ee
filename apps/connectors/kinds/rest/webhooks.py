"""The generic REST kind's webhook edge: Standard Webhooks events naming a configured stream.

Verification is the Standard Webhooks scheme (``schemes.verify_standard``); the inbox id is ``webhook-id``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from apps.connectors.webhooks.schemes import Events, Headers, Hint, Malformed, bounded, event_ref


def event_id(headers: Headers) -> str:
    """``webhook-id`` (bounded to the inbox column); "" when absent (the body's hash is used)."""
    msg_id = headers.get("webhook-id", "").strip()
    return bounded(msg_id) if msg_id else ""


_STANDARD_TYPE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\.(created|updated|deleted)$")


def _configured_streams(options: Mapping[str, Any]) -> set[str] | None:
    """The rest connection's stream names, or None when the options do not list them (checked elsewhere)."""
    streams = options.get("streams")
    if not isinstance(streams, list):
        return None
    return {s["name"] for s in streams if isinstance(s, dict) and isinstance(s.get("name"), str)}


def events(payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
    """One Standard Webhooks event: ``<stream>.<created|updated|deleted>`` with the record or its id."""
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
        hint = Hint(match.group(1), event_ref(data["id"], "data.id"), op, at)
    else:
        hint = Hint(match.group(1), str(data.get("id") or ""), op, at, data)
    configured = _configured_streams(options)
    if configured is not None and hint.stream not in configured:
        # A stream this connection does not sync: ignored, as other vendors' unsynced objects.
        return Events([], {f"stream {hint.stream}": 1})
    return Events([hint])
