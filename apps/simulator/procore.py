"""Procore REST v1.0/v1.1 as documented: projects, vendors, schedule tasks, change order packages, submittals.

Routes, parameters, headers, fields and enums follow Procore's published reference (the paths as listed by
an SDK generated from Procore's OpenAPI, ``weigandconstruction/procore_python_sdk``) and the
``procore/documentation`` guides (pagination, filtering, rate limiting); anything else is 404 like Procore.

- ``GET /rest/v1.0/projects?company_id=`` (``filters[updated_at]``, ``filters[id]``, ``filters[by_status]``,
  ``serializer_view=compact``); ``GET /rest/v1.0/projects/{id}?company_id=``;
- ``GET /rest/v1.0/vendors?company_id=`` (``filters[updated_at]``, ``filters[id]``);
- ``GET /rest/v1.0/tasks?project_id=`` (``filters[updated_at]``); ``GET /rest/v1.0/tasks/{id}?project_id=``;
- ``GET /rest/v1.0/change_order_packages?project_id=`` (``filters[updated_at]``, ``filters[id]``),
  ``GET`` / ``PATCH /rest/v1.0/change_order_packages/{id}?project_id=``;
- ``GET /rest/v1.1/projects/{project_id}/submittals`` (``filters[updated_at]``, ``filters[id]``) and
  ``.../submittals/{id}``; ``POST /rest/v1.0/projects/{project_id}/rfis``.

Lists page with ``page``/``per_page`` and answer ``Total``, ``Per-Page`` and a ``Link`` header. No list here
documents a sort by ``updated_at``, so lists come in id order and ``sort`` is not honoured. Every answer
carries ``X-Rate-Limit-Limit`` / ``-Remaining`` / ``-Reset`` for an hourly window (``SimState.procore_rate``);
past the limit, 429 until the reset.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, TypeVar
from urllib.parse import urlencode

from .common import (
    Request,
    Response,
    json_response,
    money_num,
    money_str,
    now_ms,
    parse_instant,
    procore_time,
)
from .names import CO_STATUS_ENUM
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
# The simulated tenant's "schedule critical" submittal custom field: custom fields are keyed
# ``custom_field_<definition id>`` with ``{"data_type", "value"}`` (List Submittals v1.1 ``custom_fields``).
SCHEDULE_CRITICAL_FIELD = "custom_field_598134325"
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


def _at_noon(day: Any) -> str | None:
    """A task timestamp (ISO 8601 UTC) for a schedule date."""
    return f"{day.isoformat()}T12:00:00Z" if day is not None else None


def render_project(p: PcProject, compact: bool = False) -> dict[str, Any]:
    """List projects / Show project (``Project`` schema); ``compact``: id, name and display_name only."""
    display = f"{p.project_number} - {p.name}"
    if compact:
        return {"id": p.id, "name": p.name, "display_name": display}
    return {
        "id": p.id,
        "name": p.name,
        "display_name": display,
        "project_number": p.project_number,
        "origin_id": p.origin_id,
        "origin_code": p.project_number,
        "origin_data": None,
        "total_value": money_num(p.total_value),
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
    """List tasks / Show task (``Task`` schema): no project_id; timestamps in ISO 8601 UTC."""
    return {
        "id": t.id,
        "name": t.name,
        "task_name": t.name,
        "start_datetime": _at_noon(t.start),
        "finish_datetime": _at_noon(t.finish),
        "actual_start": _at_noon(t.start) if t.percentage else None,
        "actual_finish": _at_noon(t.actual_finish),
        "percentage": t.percentage,
        "milestone": t.milestone,
        "critical_path": t.milestone,
        "has_children": False,
        "parent_id": None,
        "created_at": procore_time(t.created),
        "updated_at": procore_time(t.updated),
    }


def render_change_order(c: PcChangeOrder) -> dict[str, Any]:
    """List / Show Change Order Package: no project_id; ``status`` one of the documented enum."""
    return {
        "id": c.id,
        "number": c.number,
        "title": c.title,
        "status": c.status,
        "executed": c.status == "approved",
        "revision": 0,
        "grand_total": money_str(c.grand_total),
        "due_date": None,
        "deleted_at": None,
        "created_at": procore_time(c.created),
        "updated_at": procore_time(c.updated),
    }


def render_submittal(s: PcSubmittal, company: Company | None = None) -> dict[str, Any]:
    """List Submittals on a project (v1.1): no project_id; the return date is the approver's."""
    vendor = company.pc_vendors.get(s.vendor_id) if company else None
    status_id = SUBMITTAL_STATUS_IDS.get(s.status, 2)
    sent = procore_time(s.created)[:10]
    return {
        "id": s.id,
        "number": s.number,
        "formatted_number": s.number,
        "title": s.title,
        "revision": str(s.revision),
        "current_revision": True,
        "status": {"id": status_id, "name": s.status, "status": s.status},
        "due_date": s.due_date.isoformat(),
        "responsible_contractor": {"id": s.vendor_id, "name": vendor.name if vendor else None},
        "approvers": [
            {
                "id": s.id * 10 + 1,
                "approver_type": "Approver",
                "due_date": s.due_date.isoformat(),
                "response_required": True,
                "sent_date": sent,
                "returned_date": s.returned_date.isoformat() if s.returned_date else None,
                "response": {"id": status_id, "name": s.status, "considered": s.status},
                "workflow_group_number": 1,
                "user": {"id": 7001, "name": "Project Architect", "login": "architect@example.test"},
            }
        ],
        "custom_fields": {SCHEDULE_CRITICAL_FIELD: {"data_type": "boolean", "value": s.schedule_critical}},
        "created_at": procore_time(s.created),
        "updated_at": procore_time(s.updated),
    }


def render_vendor(v: PcVendor) -> dict[str, Any]:
    """List company vendors (``vendors`` schema)."""
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
    """The documented filters: ``filters[updated_at]`` (a range), ``filters[id]`` / ``filters[id][]``."""
    records: list[T] = view.records
    window = req.q("filters[updated_at]")
    if window is not None:
        start, sep, end = window.strip('"').partition("...")
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
    # No documented sort by update time: id order, whatever ``sort`` asks.
    return sorted(records, key=lambda r: int(r.id))


def _int_param(req: Request, name: str, default: int) -> int:
    raw = req.q(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest(f"{name} must be a positive integer")
    return int(raw)


def rate_headers(state: SimState) -> tuple[list[tuple[str, str]], bool]:
    """This call counted in the hourly window: the X-Rate-Limit-* headers and whether it is over."""
    limit, seconds = state.procore_rate
    now = time.time()
    window = int(now // seconds)
    with state.lock:
        calls = state.procore_calls.get(window, 0) + 1
        state.procore_calls.clear()
        state.procore_calls[window] = calls
    reset = int((window + 1) * seconds)
    headers = [
        ("X-Rate-Limit-Limit", str(limit)),
        ("X-Rate-Limit-Remaining", str(max(0, limit - calls))),
        ("X-Rate-Limit-Reset", str(reset)),
    ]
    return headers, calls > limit


def paged(state: SimState, req: Request, view: View[T], render: Any, filters: bool = True) -> Response:
    try:
        page = _int_param(req, "page", 1)
        per_page = min(_int_param(req, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
        with state.company.lock:
            records = _filtered(view, req) if filters else sorted(view.records, key=lambda r: int(r.id))
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
    headers = [("Total", str(total)), ("Per-Page", str(per_page))]
    if links:
        headers.append(("Link", ", ".join(links)))
    return json_response(200, body, headers)


# ---- routing ----------------------------------------------------------------------------------------

ROUTES = [
    ("GET", re.compile(r"/rest/v1\.0/projects"), "projects"),
    ("GET", re.compile(r"/rest/v1\.0/projects/(\d+)"), "project"),
    ("GET", re.compile(r"/rest/v1\.0/vendors"), "vendors"),
    ("GET", re.compile(r"/rest/v1\.0/tasks"), "tasks"),
    ("GET", re.compile(r"/rest/v1\.0/tasks/(\d+)"), "task"),
    ("GET", re.compile(r"/rest/v1\.0/change_order_packages"), "change_orders"),
    ("GET", re.compile(r"/rest/v1\.0/change_order_packages/(\d+)"), "change_order"),
    ("PATCH", re.compile(r"/rest/v1\.0/change_order_packages/(\d+)"), "patch_change_order"),
    ("GET", re.compile(r"/rest/v1\.1/projects/(\d+)/submittals"), "submittals"),
    ("GET", re.compile(r"/rest/v1\.1/projects/(\d+)/submittals/(\d+)"), "submittal"),
    ("POST", re.compile(r"/rest/v1\.0/projects/(\d+)/rfis"), "create_rfi"),
]
# Routes whose project comes from the path; the others that need one take ``?project_id=``.
_PATH_PROJECT = {"submittals", "submittal", "create_rfi"}
_QUERY_PROJECT = {"tasks", "task", "change_orders", "change_order", "patch_change_order"}


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
    limits, over = rate_headers(state)
    if over:
        return json_response(429, {"errors": "Rate limit exceeded"}, limits)
    response = _route(state, req)
    response.headers.extend(limits)
    return response


def _route(state: SimState, req: Request) -> Response:
    company_header = req.header("procore-company-id")
    if not company_header:
        return error(400, "Procore-Company-Id header is required")
    if company_header.strip() != str(PROCORE_COMPANY_ID):
        return error(403, "You do not have access to this company")
    path = req.path.rstrip("/")
    matched = [(method, name, m) for method, pattern, name in ROUTES if (m := pattern.fullmatch(path))]
    for method, name, m in matched:
        if method == req.method:
            return _dispatch(state, req, name, [int(g) for g in m.groups()])
    return error(405, f"{req.method} is not allowed here") if matched else error(404, "Not Found")


def _company_scope(req: Request) -> Response | None:
    company_id = req.q("company_id")
    if company_id != str(PROCORE_COMPANY_ID):
        return error(400 if not company_id else 403, "company_id is missing or not accessible")
    return None


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


def _projects(state: SimState, req: Request) -> Response:
    c = state.company
    view = c.view(c.pc_projects)
    status = req.q("filters[by_status]")
    if status not in (None, "", "All", "Active", "Inactive"):
        return error(400, "filters[by_status] must be one of Active, Inactive or All")
    if status in ("Active", "Inactive"):
        active = status == "Active"
        view = View.of([p for p in view.records if p.active is active])
    compact = req.q("serializer_view") == "compact"
    return paged(state, req, view, lambda p: render_project(p, compact))


def _dispatch(state: SimState, req: Request, name: str, args: list[int]) -> Response:
    c = state.company
    if name in ("projects", "project", "vendors"):
        refused = _company_scope(req)
        if refused is not None:
            return refused
        if name == "projects":
            return _projects(state, req)
        if name == "vendors":
            return paged(state, req, c.view(c.pc_vendors), render_vendor)
        project = c.pc_projects.get(args[0])
        return json_response(200, render_project(project)) if project else error(404, "Project not found")
    scope = _project_scope(state, req, args[0] if name in _PATH_PROJECT else None)
    if isinstance(scope, Response):
        return scope
    if name == "create_rfi":
        return create_rfi(state, req, scope)
    empty: View[Any] = View([], [])
    if name == "tasks":
        return paged(state, req, c.by_project(c.pc_tasks).get(scope, empty), render_task)
    if name == "change_orders":
        return paged(state, req, c.by_project(c.pc_change_orders).get(scope, empty), render_change_order)
    if name == "submittals":
        return paged(
            state, req, c.by_project(c.pc_submittals).get(scope, empty), lambda s: render_submittal(s, c)
        )
    if name == "task":
        task = c.pc_tasks.get(args[0])
        if task is None or task.project_id != scope:
            return error(404, "Task not found")
        return json_response(200, render_task(task))
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
    if status not in CO_STATUS_ENUM:
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
