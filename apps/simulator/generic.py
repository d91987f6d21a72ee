"""A generic in-house REST API (the ``rest`` kind's upstream): Procore's records in a plain JSON shape.

``GET /generic/{style}/{resource}`` with ``style`` one of the four pagination styles the ``rest`` kind speaks:

- ``cursor``: ``?limit=&cursor=`` → ``{"data": [...], "next_cursor": "<opaque>" | null}``
- ``page``: ``?page=&per_page=`` → ``{"data": [...], "meta": {"page": n, "total_pages": m}}``
- ``offset``: ``?offset=&limit=`` → ``{"items": [...], "total": n}``
- ``link``: ``?page=&per_page=`` → a bare JSON list, the next page in an RFC 5988 ``Link`` header

Every style filters with ``updated_since`` (inclusive, ISO 8601) and lists oldest first by (updated, id).
Records nest their fields (``attributes.*``, ``meta.updated_at``) to exercise the dotted-path mapping.
``GET /generic/{style}/{resource}/{id}`` answers one record as the bare object (404 once deleted): what
id-only webhooks fetch. ``rest_event`` builds the Standard Webhooks event for a record (see
``webhooks.standard_delivery``). Bearer token as for the other vendors (system ``rest``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from .common import Request, Response, json_response, money_str, parse_instant, procore_time
from .records import PcChangeOrder, PcProject, PcVendor, Record, View
from .state import SimState

STYLES = ("cursor", "page", "offset", "link")
MAX_PAGE = 1000
ROUTE = re.compile(r"/generic/(cursor|page|offset|link)/(projects|change_orders|vendors)(?:/([^/]+))?")
# Our object types (as ``change_record`` and ``Company.delete`` name them) -> the generic resource.
RESOURCES = {"project": "projects", "change_order": "change_orders", "vendor": "vendors"}
EVENT_VERBS = {"create": "created", "update": "updated", "delete": "deleted"}


def render_project(p: PcProject) -> dict[str, Any]:
    return {
        "id": p.id,
        "attributes": {
            "title": p.name,
            "code": p.project_number,
            "value": money_str(p.total_value),
            "health": p.schedule_status,
            "dates": {"start": p.start_date.isoformat(), "end": p.completion_date.isoformat()},
        },
        "meta": {"created_at": procore_time(p.created), "updated_at": procore_time(p.updated)},
    }


IN_HOUSE_STATES = {
    "pricing": "pending",
    "not_pricing": "pending",
    "revised": "pending",
    "proceeding": "pending",
    "not_proceeding": "pending",
    "no_charge": "approved",
}


def render_change_order(c: PcChangeOrder) -> dict[str, Any]:
    return {
        "id": c.id,
        "attributes": {
            "number": c.number,
            "title": c.title,
            # An in-house system with its own words (draft, pending, approved, rejected, void), not Procore's.
            "state": IN_HOUSE_STATES.get(c.status, c.status),
            "total": money_str(c.grand_total),
            "project": {"id": c.project_id},
        },
        "meta": {"created_at": procore_time(c.created), "updated_at": procore_time(c.updated)},
    }


def render_vendor(v: PcVendor) -> dict[str, Any]:
    return {
        "id": v.id,
        "attributes": {"name": v.name, "email": v.email},
        "meta": {"created_at": procore_time(v.created), "updated_at": procore_time(v.updated)},
    }


RENDERERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "projects": render_project,
    "change_orders": render_change_order,
    "vendors": render_vendor,
}


def _resources(state: SimState) -> dict[str, tuple[View[Any], Callable[[Any], dict[str, Any]]]]:
    c = state.company
    return {
        "projects": (c.view(c.pc_projects), render_project),
        "change_orders": (c.view(c.pc_change_orders), render_change_order),
        "vendors": (c.view(c.pc_vendors), render_vendor),
    }


def _positive(req: Request, name: str, default: int, minimum: int = 1) -> int:
    raw = req.q(name)
    if raw in (None, ""):
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}")
    return int(raw)


def _encode_cursor(record: Record) -> str:
    return base64.urlsafe_b64encode(json.dumps([record.updated, int(record.id)]).encode()).decode()


def _decode_cursor(text: str) -> tuple[int, int]:
    try:
        updated, record_id = json.loads(base64.urlsafe_b64decode(text.encode()))
        return int(updated), int(record_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("cursor is not one this server issued") from exc


def handle(state: SimState, req: Request) -> Response | None:
    if not req.path.startswith("/generic/"):
        return None
    if not state.authorized("rest", req):
        return json_response(401, {"error": "unauthorized"})
    match = ROUTE.fullmatch(req.path.rstrip("/"))
    if match is None:
        return json_response(404, {"error": f"no such resource: {req.path}"})
    if req.method != "GET":
        return json_response(405, {"error": f"{req.method} is not allowed here"})
    style, resource, record_id = match.groups()
    if record_id is not None:  # before the sorted views: a read by id must not rebuild them
        return _detail(state, resource, record_id)
    view, render = _resources(state)[resource]
    try:
        since = req.q("updated_since")
        with state.company.lock:
            records: list[Any] = view.between(parse_instant(since) if since else None, None)
            return _page(req, style, records, render)
    except ValueError as exc:
        return json_response(400, {"error": str(exc)})


def _detail(state: SimState, resource: str, record_id: str) -> Response:
    with state.company.lock:
        table = state.company.table("procore", resource.removesuffix("s"))
        record = table.get(int(record_id)) if record_id.isdigit() else None
        if record is None:
            return json_response(404, {"error": f"no {resource} record {record_id}"})
        return json_response(200, RENDERERS[resource](record))


def rest_event(
    object_type: str, record: Any, operation: str = "update", *, full: bool = True
) -> dict[str, Any]:
    """The Standard Webhooks event the generic API sends for ``record``: ``{"type", "data"}``.

    ``object_type``: ``project`` / ``change_order`` / ``vendor`` (or the resource name); ``full``: the
    rendered record in ``data``, else ``{"id": ...}`` only (the receiver fetches it).
    """
    resource = RESOURCES.get(object_type, object_type)
    if resource not in RENDERERS:
        raise ValueError(f"the generic API has no resource {object_type!r}")
    data = RENDERERS[resource](record) if full else {"id": record.id}
    return {"type": f"{resource}.{EVENT_VERBS[operation.lower()]}", "data": data}


def _page(req: Request, style: str, records: list[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
    total = len(records)
    if style == "cursor":
        limit = min(_positive(req, "limit", 100), MAX_PAGE)
        start = 0
        if req.q("cursor"):
            after = _decode_cursor(req.q("cursor") or "")
            start = next((i for i, r in enumerate(records) if (r.updated, int(r.id)) > after), total)
        items = records[start : start + limit]
        more = start + limit < total
        next_cursor = _encode_cursor(items[-1]) if more and items else None
        return json_response(200, {"data": [render(r) for r in items], "next_cursor": next_cursor})
    if style == "offset":
        offset = _positive(req, "offset", 0, minimum=0)
        limit = min(_positive(req, "limit", 100), MAX_PAGE)
        items = records[offset : offset + limit]
        return json_response(200, {"items": [render(r) for r in items], "total": total})
    page = _positive(req, "page", 1)
    per_page = min(_positive(req, "per_page", 100), MAX_PAGE)
    items = records[(page - 1) * per_page : page * per_page]
    pages = max(1, -(-total // per_page))
    if style == "page":
        body = {"data": [render(r) for r in items], "meta": {"page": page, "total_pages": pages}}
        return json_response(200, body)
    headers = [("Total", str(total))]
    if page < pages:
        params = [(k, v) for k, values in req.query.items() if k not in ("page", "per_page") for v in values]
        query = urlencode([*params, ("page", page + 1), ("per_page", per_page)])
        headers.append(("Link", f'<{req.base_url}{req.path}?{query}>; rel="next"'))
    return json_response(200, [render(r) for r in items], headers)
