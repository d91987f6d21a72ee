"""Procore's webhook edge: the shared ``Authorization`` secret and payload formats 2.0, 3.0 and 4.0.

Pure functions (no database, no I/O); ``Procore`` exposes them as its ``ConnectorKind`` webhook hooks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from apps.connectors.webhooks.schemes import (
    MAX_EVENT_ID,
    Events,
    Headers,
    Hint,
    Inbound,
    Malformed,
    Rejected,
    any_equal,
    event_ref,
    header,
    hint_time,
)


def verify(inbound: Inbound, secrets: list[str]) -> None:
    """The hook's ``Authorization`` header as configured on Procore's webhook (compared in constant time)."""
    given = header(inbound, "authorization").encode()
    if not any_equal((s.encode() for s in secrets), given):
        raise Rejected("authorization does not match")


def event_id(payload: Any) -> str:
    """The event's ``ulid`` (v4.0) or ``id``; "" when it has neither (the body's hash is used)."""
    if not isinstance(payload, dict):
        return ""
    return str(payload.get("ulid") or payload.get("id") or "")[:MAX_EVENT_ID]


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


def events(payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
    """One event: its hint, or counted as ignored (another company, a resource not synced)."""
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
    resource_id = event_ref(payload.get("resource_id"), "resource_id")
    company = str(options.get("company_id") or "")
    if company and payload.get("company_id") not in (None, "") and str(payload["company_id"]) != company:
        return Events([], {f"company {payload['company_id']}": 1})
    stream = PROCORE_STREAMS.get(re.sub(r"[\s/-]+", "_", name.strip().lower()))
    if stream is None:
        return Events([], {f"resource {name}": 1})
    project = payload.get("project_id")
    scope = event_ref(project, "project_id") if project not in (None, "") else ""
    op = "delete" if action.lower() in _PROCORE_DELETE else "upsert"
    return Events([Hint(stream, resource_id, op, hint_time(payload.get("timestamp")), scope=scope)])
