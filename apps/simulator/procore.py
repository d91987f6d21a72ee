"""Procore REST v1.0/v1.1: projects, vendors, schedule tasks, change order packages, submittals.

Lists page with ``page``/``per_page`` and answer ``Total``, ``Per-Page`` and an RFC 5988 ``Link`` header.
The ``/companies/{id}/...`` variants of change orders, tasks and submittals are the simulator's company-level
convenience for bulk sync (same records and filters as the per-project endpoints)."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar
from urllib.parse import urlencode

from .common import Request, Response, json_response, money_str, now_ms, parse_instant, procore_time
from .names import CO_STATUSES
from .records import (
    PROCORE_COMPANY_ID,
    PROCORE_COMPANY_NAME,
    Company,
    PcChangeOrder,
    PcProject,
    PcSubmittal,
    PcTask,
    PcVendor,
    Record,
    View,
)
from .state import SimState

DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 1000
SUBMITTAL_STATUS_IDS = {
    "Draft": 1,
    "Open": 2,
    "Closed": 3,
    "Approved": 4,
    "Approved as Noted": 5,
    "Revise and Resubmit": 6,
    "Rejected": 7,
}
T = TypeVar("T", bound=Record)


def error(status: int, message: Any) -> Response:
    return json_response(status, {"errors": message})


def render_project(p: PcProject) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "display_name": f"{p.project_number} - {p.name}",
        "project_number": p.project_number,
        "origin_id": p.origin_id,
        "origin_code": p.project_number,
        "origin_data": None,
        "total_value": money_str(p.total_value),
        "schedule_status": p.schedule_status,
        "active": p.active,
        "start_date": p.start_date.isoformat(),
        "completion_date": p.completion_date.isoformat(),
        "city": p.city,
        "state_code": p.state,
        "country_code": "US",
        "stage": "Course of Construction" if p.active else "Closeout",
        "company": {"id": PROCORE_COMPANY_ID, "name": PROCORE_COMPANY_NAME},
        "created_at": procore_time(p.created),
        "updated_at": procore_time(p.updated),
    }


def render_task(t: PcTask) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "project_id": t.project_id,
        "start": t.start.isoformat(),
        "finish": t.finish.isoformat(),
        "actual_finish": t.actual_finish.isoformat() if t.actual_finish else None,
        "percentage": t.percentage,
        "milestone": t.milestone,
        "created_at": procore_time(t.created),
        "updated_at": procore_time(t.updated),
    }


def render_change_order(c: PcChangeOrder) -> dict[str, Any]:
    return {
        "id": c.id,
        "number": c.number,
        "title": c.title,
        "description": c.title,
        "status": c.status,
        "executed": c.status == "approved",
        "revision": 0,
        "grand_total": money_str(c.grand_total),
        "project_id": c.project_id,
        "created_at": procore_time(c.created),
        "updated_at": procore_time(c.updated),
    }


def render_submittal(s: PcSubmittal, company: Company | None = None) -> dict[str, Any]:
    vendor = company.pc_vendors.get(s.vendor_id) if company else None
    return {
        "id": s.id,
        "number": s.number,
        "title": s.title,
        "revision": s.revision,
        "status": {"id": SUBMITTAL_STATUS_IDS.get(s.status, 2), "name": s.status},
        "due_date": s.due_date.isoformat(),
        "returned_date": s.returned_date.isoformat() if s.returned_date else None,
        "responsible_contractor": {"id": s.vendor_id, "name": vendor.name if vendor else None},
        "custom_fields": {"schedule_critical": {"value": s.schedule_critical}},
        "project_id": s.project_id,
        "created_at": procore_time(s.created),
        "updated_at": procore_time(s.updated),
    }


def render_vendor(v: PcVendor) -> dict[str, Any]:
    return {
        "id": v.id,
        "name": v.name,
        "abbreviated_name": v.abbreviated_name,
        "email_address": v.email,
        "trade_name": v.trade,
        "is_active": v.is_active,
        "created_at": procore_time(v.created),
        "updated_at": procore_time(v.updated),
    }


# ---- lists ------------------------------------------------------------------------------------------


class BadRequest(ValueError):
    pass


def _filtered(view: View[T], req: Request) -> list[T]:
    records: list[T] = view.records
    window = req.q("filters[updated_at]")
    if window is not None:
        start, sep, end = window.partition("...")
        try:
            if not sep:
                raise ValueError
            records = view.between(
                parse_instant(start) if start else None, parse_instant(end) if end else None
            )
        except ValueError as exc:
            raise BadRequest(
                "filters[updated_at] must be a range '<start>...<end>' of ISO 8601 times"
            ) from exc
    raw_ids = req.query.get("filters[id][]", []) + [
        i for v in req.query.get("filters[id]", []) for i in v.split(",")
    ]
    if raw_ids:
        try:
            wanted = {int(i) for i in raw_ids if i}
        except ValueError as exc:
            raise BadRequest("filters[id] must be integers") from exc
        records = [r for r in records if r.id in wanted]
    milestone = req.q("filters[milestone]")
    if milestone is not None:
        flag = milestone.lower() == "true"
        records = [r for r in records if getattr(r, "milestone", None) is flag]
    return records


def _int_param(req: Request, name: str, default: int) -> int:
    raw = req.q(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest(f"{name} must be a positive integer")
    return int(raw)


def paged(state: SimState, req: Request, view: View[T], render: Any) -> Response:
    try:
        page = _int_param(req, "page", 1)
        per_page = min(_int_param(req, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
        with state.company.lock:
            records = _filtered(view, req)
            offset = (page - 1) * per_page
            items = records[offset : offset + per_page]
            if req.duplicate_page and 0 < offset <= len(records):
                items = [records[offset - 1], *items]
            body = [render(r) for r in items]
    except BadRequest as exc:
        return error(400, str(exc))
    total = len(records)
    last = max(1, -(-total // per_page))

    def url(n: int) -> str:
        params = [(k, v) for k, values in req.query.items() if k not in ("page", "per_page") for v in values]
        return f"<{req.base_url}{req.path}?{urlencode([*params, ('page', n), ('per_page', per_page)])}>"

    links = []
    if page > 1:
        links += [f'{url(1)}; rel="first"', f'{url(min(page - 1, last))}; rel="prev"']
    if page < last:
        links += [f'{url(page + 1)}; rel="next"', f'{url(last)}; rel="last"']
    headers = [
        ("Total", str(total)),
        ("Per-Page", str(per_page)),
        ("X-Rate-Limit-Limit", "3600"),
        ("X-Rate-Limit-Remaining", "3599"),
    ]
    if links:
        headers.append(("Link", ", ".join(links)))
    return json_response(200, body, headers)


# ---- routing ----------------------------------------------------------------------------------------

ROUTES = [
    ("GET", re.compile(r"/rest/v1\.0/projects"), "projects"),
    ("GET", re.compile(r"/rest/v1\.0/projects/(\d+)"), "project"),
    ("GET", re.compile(r"/rest/v1\.0/companies/(\d+)/vendors"), "vendors"),
    ("GET", re.compile(r"/rest/v1\.0/projects/(\d+)/schedule/tasks"), "project_tasks"),
    ("GET", re.compile(r"/rest/v1\.0/companies/(\d+)/schedule/tasks"), "company_tasks"),
    ("GET", re.compile(r"/rest/v1\.0/change_order_packages"), "project_cos"),
    ("GET", re.compile(r"/rest/v1\.0/change_order_packages/(\d+)"), "change_order"),
    ("PATCH", re.compile(r"/rest/v1\.0/change_order_packages/(\d+)"), "patch_change_order"),
    ("GET", re.compile(r"/rest/v1\.0/companies/(\d+)/change_order_packages"), "company_cos"),
    ("GET", re.compile(r"/rest/v1\.1/projects/(\d+)/submittals"), "project_submittals"),
    ("GET", re.compile(r"/rest/v1\.1/projects/(\d+)/submittals/(\d+)"), "submittal"),
    ("GET", re.compile(r"/rest/v1\.1/companies/(\d+)/submittals"), "company_submittals"),
    ("POST", re.compile(r"/rest/v1\.0/projects/(\d+)/rfis"), "create_rfi"),
]


def handle(state: SimState, req: Request) -> Response | None:
    if not req.path.startswith("/rest/"):
        return None
    if not state.authorized("procore", req):
        return json_response(
            401,
            {"errors": "401 Unauthorized"},
            [
                (
                    "WWW-Authenticate",
                    'Bearer realm="Doorkeeper", error="invalid_token", '
                    'error_description="The access token is invalid"',
                )
            ],
        )
    company_header = req.header("procore-company-id")
    if not company_header:
        return error(400, "Procore-Company-Id header is required")
    if company_header.strip() != str(PROCORE_COMPANY_ID):
        return error(403, "You do not have access to this company")
    path = req.path.rstrip("/")
    matched = [(method, name, m) for method, pattern, name in ROUTES if (m := pattern.fullmatch(path))]
    for method, name, m in matched:
        if method == req.method:
            args = [int(g) for g in m.groups()]
            if (name.startswith("company_") or name == "vendors") and args[0] != PROCORE_COMPANY_ID:
                return error(403, "You do not have access to this company")
            return _dispatch(state, req, name, args)
    return error(405, f"{req.method} is not allowed here") if matched else error(404, "Not Found")


def _project_scope(state: SimState, req: Request, project_id: int | None) -> Response | int:
    if project_id is None:
        raw = req.q("project_id")
        if not raw:
            return error(400, "project_id is missing")
        if not raw.isdigit():
            return error(400, "project_id must be an integer")
        project_id = int(raw)
    if project_id not in state.company.pc_projects:
        return error(404, "Project not found")
    return project_id


def _dispatch(state: SimState, req: Request, name: str, args: list[int]) -> Response:
    c = state.company
    if name == "projects":
        if req.q("company_id") != str(PROCORE_COMPANY_ID):
            return error(400 if not req.q("company_id") else 403, "company_id is missing or not accessible")
        return paged(state, req, c.view(c.pc_projects), render_project)
    if name == "vendors":
        return paged(state, req, c.view(c.pc_vendors), render_vendor)
    if name == "company_tasks":
        return paged(state, req, c.view(c.pc_tasks), render_task)
    if name == "company_cos":
        return paged(state, req, c.view(c.pc_change_orders), render_change_order)
    if name == "company_submittals":
        return paged(state, req, c.view(c.pc_submittals), lambda s: render_submittal(s, c))
    if name == "create_rfi":
        return create_rfi(state, req, args[0])
    if name == "project":
        project = c.pc_projects.get(args[0])
        return json_response(200, render_project(project)) if project else error(404, "Project not found")
    scope = _project_scope(
        state, req, args[0] if name in ("project_tasks", "project_submittals", "submittal") else None
    )
    if isinstance(scope, Response):
        return scope
    empty: View[Any] = View([], [])
    if name == "project_tasks":
        return paged(state, req, c.by_project(c.pc_tasks).get(scope, empty), render_task)
    if name == "project_cos":
        return paged(state, req, c.by_project(c.pc_change_orders).get(scope, empty), render_change_order)
    if name == "project_submittals":
        return paged(
            state, req, c.by_project(c.pc_submittals).get(scope, empty), lambda s: render_submittal(s, c)
        )
    if name == "submittal":
        submittal = c.pc_submittals.get(args[1])
        if submittal is None or submittal.project_id != scope:
            return error(404, "Submittal not found")
        return json_response(200, render_submittal(submittal, c))
    change_order = c.pc_change_orders.get(args[0])
    if change_order is None or change_order.project_id != scope:
        return error(404, "Change order package not found")
    if name == "change_order":
        return json_response(200, render_change_order(change_order))
    return _patch_change_order(state, req, change_order)


def _patch_change_order(state: SimState, req: Request, change_order: PcChangeOrder) -> Response:
    try:
        body = req.json()
        status = body["change_order_package"]["status"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError):
        return error(400, 'expected a JSON body {"change_order_package": {"status": ...}}')
    if status not in CO_STATUSES:
        return error(422, {"status": ["is not included in the list"]})
    company = state.company
    with company.lock:
        change_order.status = status
        change_order.updated = company.write_time()
        company.changed()
        rendered = render_change_order(change_order)
    state.record_note(
        "procore",
        change_order.id,
        body,
        req.header("idempotency-key"),
        project_id=change_order.project_id,
        status=status,
    )
    return json_response(200, rendered)


def create_rfi(state: SimState, req: Request, project_id: int) -> Response:
    """``POST /rest/v1.0/projects/{id}/rfis`` ``{"rfi": {"subject", "question": {"body"}}}`` → 201.

    A repeated ``Idempotency-Key`` replays the first answer (Fulcrum's ``escalate_pm`` retries send it).
    """
    key = req.header("idempotency-key")
    if key and f"procore-rfi:{key}" in state.idempotent:
        return state.idempotent[f"procore-rfi:{key}"]
    if project_id not in state.company.pc_projects:
        return error(404, "Project not found")
    try:
        rfi = req.json()["rfi"]
        subject, question = str(rfi["subject"]), str(rfi["question"]["body"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError):
        return error(400, 'expected a JSON body {"rfi": {"subject": ..., "question": {"body": ...}}}')
    if not subject.strip():
        return error(422, {"subject": ["can't be blank"]})
    rfi_id = 8_000_000 + state.next_id()
    created = procore_time(now_ms())
    state.record_note("procore", project_id, question, key, kind="rfi", id=rfi_id, subject=subject)
    body = {
        "id": rfi_id,
        "number": str(rfi_id % 10_000),
        "subject": subject,
        "status": "open",
        "project_id": project_id,
        "questions": [{"body": question}],
        "created_at": created,
        "updated_at": created,
    }
    response = json_response(201, body)
    if key:
        state.idempotent[f"procore-rfi:{key}"] = response
    return response
