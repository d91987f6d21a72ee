"""Procore's streams and record shapes, on the documented REST v1.0 / v1.1 list actions.

Company-level lists (one query per run):
- projects: ``GET /rest/v1.0/projects?company_id=`` (List projects; ``filters[updated_at]``, ``filters[id]``,
  ``filters[by_status]``);
- vendors: ``GET /rest/v1.0/vendors?company_id=`` (List company vendors; ``filters[updated_at]``).

Project-scoped lists (one query per project and run; the records carry no ``project_id``, so it is the
project they were listed under):
- milestones: ``GET /rest/v1.0/tasks?project_id=`` (List tasks, the project schedule;
  ``filters[updated_at]``), keeping the tasks with ``milestone: true``;
- change orders: ``GET /rest/v1.0/change_order_packages?project_id=`` (List Change Order Packages;
  ``filters[updated_at]``, ``filters[id]``);
- submittals: ``GET /rest/v1.1/projects/{project_id}/submittals`` (List Submittals on a project;
  ``filters[updated_at]``, ``filters[id]``).

Reference pages: https://developers.procore.com/reference/rest/ (projects, company-vendors, tasks,
change-order-packages, submittals), as listed path by path by an SDK generated from Procore's OpenAPI
(``weigandconstruction/procore_python_sdk``). No list documents ``sort=updated_at``: windows are read
whole (``paging.read_all``) and the cursor moves only after a window is complete; per project for the
project-scoped lists, so a run cut short resumes with the projects it finished.

Which projects an incremental run reads (``ProjectList.chosen``): Procore has no company-wide change feed
for these lists, and asking every project each run cost 30,635 calls at 10,200 projects. So a run reads
the projects whose own record changed in the window (List projects with ``filters[updated_at]``: new and
edited projects), plus a rotating share — the ``1 / options.project_rotation_runs`` of projects read least
recently, by default a day of the connection's schedule (``rotation_runs``) — and relies on webhooks
between. A change whose webhook was lost, in a project not edited, is read at the latest
``project_rotation_runs`` runs later: within Procore's one-day webhook retry (docs/vendors/procore.md,
"Which projects a run reads"). A full sync reads every project. The scheduled task reads the two apart
(``Stream.reads``): the incremental the edited and new projects, then the share as its own reconciliation
task (``reconcile_share_task``), so what a change waits for is not the share's calls.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from celery.schedules import crontab

from apps.connectors.http import HttpClient, UpstreamError
from apps.connectors.kinds.base import (
    LOOKBACK,
    BadRecord,
    Cursor,
    Page,
    Record,
    Stream,
    cursor_start,
    make_cursor,
    parse_date,
    parse_datetime,
    parse_money,
)
from apps.entities.models import ChangeOrder, Milestone, Project, Submittal, Vendor

from . import paging

if TYPE_CHECKING:
    from . import Procore

PER_PAGE = paging.PER_PAGE  # tests lower it to make several pages
CONCURRENCY = 8  # project windows read at once by default (options.concurrency)
# Incremental runs read every project at least once in this many runs (options.project_rotation_runs; 1 reads
# every project every run). By default, the runs the connection's schedule makes in a day (rotation_runs):
# every project at least daily. Without a schedule (runs by hand only): 24.
ROTATION_RUNS = 24
# The key we add to a project-scoped record: the project it was listed under (Procore's records lack it).
PROJECT_KEY = "_project_id"
# Change Order Package ``status`` (the enum of the List / Show / Create Change Order Package schemas) to
# SPEC's normalised statuses. Every "Pending - ..." status of Procore's UI (in review, revised, pricing,
# not pricing, proceeding, not proceeding) is still awaiting a decision; "No Charge" is a decided change
# performed at no cost (support.procore.com "What are the default statuses for change orders").
CO_STATUS_MAP: dict[str, str] = {
    "draft": ChangeOrder.Status.DRAFT,
    "pending": ChangeOrder.Status.PENDING,
    "revised": ChangeOrder.Status.PENDING,
    "pricing": ChangeOrder.Status.PENDING,
    "not_pricing": ChangeOrder.Status.PENDING,
    "proceeding": ChangeOrder.Status.PENDING,
    "not_proceeding": ChangeOrder.Status.PENDING,
    "approved": ChangeOrder.Status.APPROVED,
    "no_charge": ChangeOrder.Status.APPROVED,
    "rejected": ChangeOrder.Status.REJECTED,
    "void": ChangeOrder.Status.VOID,
}
_TRUE = ("true", "1", "yes", "y")


def _updated(record: Record) -> dt.datetime:
    return parse_datetime(record.get("updated_at"))


def _per_page(kind: Procore) -> int:
    # options.per_page lowers the page size (never above ours), e.g. to keep pages short.
    return min(PER_PAGE, int((kind.connection.options or {}).get("per_page") or PER_PAGE))


def _newest_first_seen(records: list[Record]) -> list[Record]:
    """One copy per id (the newest), oldest first: a list may repeat a record across or within pages."""
    best: dict[Any, Record] = {}
    for record in records:
        key = record.get("id")
        if key not in best or str(record.get("updated_at") or "") >= str(best[key].get("updated_at") or ""):
            best[key] = record
    return sorted(best.values(), key=lambda r: (str(r.get("updated_at") or ""), str(r.get("id"))))


class ProcoreStream(Stream):
    kind: Procore

    def base(self, raw: Record) -> Record:
        if raw.get("id") in (None, ""):
            raise BadRecord("record without id")
        return {"external_id": str(raw["id"]), "source_updated_at": _updated(raw)}


# ---- company-level lists ---------------------------------------------------------------------------


class CompanyList(ProcoreStream):
    """A company-level list read by windows: ``filters[updated_at]=<cursor - lookback>...<run start>``."""

    path: ClassVar[str]

    def params(self) -> dict[str, Any]:
        return {"company_id": self.kind.company_id}

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        started = dt.datetime.now(dt.UTC)
        params = {**self.params(), "filters[updated_at]": paging.window(cursor_start(cursor, full), started)}
        pages = paging.read_all(client, self.path, params, _per_page(self.kind))
        previous = next(pages, None)
        for page in pages:
            assert previous is not None
            yield Page(_newest_first_seen(previous), cursor)  # the window is not complete yet
            previous = page
        # The whole window is read: everything updated up to the run's start (less the settle time, for
        # records still being committed upstream with an earlier timestamp) is ours.
        yield Page(_newest_first_seen(previous or []), make_cursor(started - self.kind.settle(), ""))

    def by_ids(self, client: HttpClient, ids: list[int]) -> list[Record]:
        found: list[Record] = []
        for start in range(0, len(ids), 100):
            params = {**self.params(), "filters[id][]": ids[start : start + 100]}
            for page in paging.read_all(client, self.path, params, PER_PAGE):
                found += page
        return found


class Projects(CompanyList):
    name = "projects"
    model = Project
    entity = "project"
    path = "/rest/v1.0/projects"

    def params(self) -> dict[str, Any]:
        # Closed projects too: change orders and submittals of a project in closeout still matter.
        return {"company_id": self.kind.company_id, "filters[by_status]": "All"}

    def normalise(self, raw: Record) -> Record:
        # No ``schedule_status`` here: Procore's project has none, so the row keeps what it has (SPEC's
        # project.schedule_status is then null). Sending "" would be refused as not one of the choices.
        return {
            **self.base(raw),
            "name": str(raw.get("name") or "").strip(),
            "number": str(raw.get("project_number") or "").strip(),
            "accounting_ref": str(raw.get("origin_id") or "").strip(),
            "contract_value": parse_money(raw.get("total_value"), required=False),
            "start_date": parse_date(raw.get("start_date")),
            "completion_date": parse_date(raw.get("completion_date")),
        }


class Vendors(CompanyList):
    name = "vendors"
    model = Vendor
    entity = "vendor"
    path = "/rest/v1.0/vendors"

    def normalise(self, raw: Record) -> Record:
        name = str(raw.get("name") or "").strip()
        if not name:
            raise BadRecord("vendor without a name")
        return {**self.base(raw), "name": name, "email": str(raw.get("email_address") or "").strip().lower()}


# ---- project-scoped lists ---------------------------------------------------------------------------


def reader_count(kind: Procore) -> int:
    """Project windows read at once (options.concurrency). Procore asks apps that call concurrently to tune
    their concurrency to its limits (rate_limiting.md); its X-Rate-Limit headers pause every reader."""
    return max(1, int((kind.connection.options or {}).get("concurrency") or CONCURRENCY))


def _in_order(
    read: Callable[[str], list[Record] | None], projects: list[str], workers: int
) -> Iterator[tuple[str, list[Record] | None]]:
    """``(project, read(project))`` in project order, with up to ``workers`` reads under way ahead of it."""
    if workers == 1:
        for pid in projects:
            yield pid, read(pid)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="procore-projects")
    try:
        ahead: deque[tuple[str, Future[list[Record] | None]]] = deque()
        queue = iter(projects)
        for pid in itertools.islice(queue, 2 * workers):
            ahead.append((pid, pool.submit(read, pid)))
        while ahead:
            pid, future = ahead.popleft()
            records = future.result()  # an upstream error surfaces here, in project order
            for nxt in itertools.islice(queue, 1):
                ahead.append((nxt, pool.submit(read, nxt)))
            yield pid, records
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def runs_per_day(schedule: str) -> int:
    """The runs a cron schedule (minute hour day month weekday) makes on a day it runs; 0 if it is none."""
    parts = schedule.split()
    if len(parts) != 5:
        return 0
    try:
        cron = crontab(minute=parts[0], hour=parts[1])
    except ValueError:
        return 0
    return len(cron.minute) * len(cron.hour)  # type: ignore[attr-defined]  # sets, once parsed


def rotation_runs(kind: Procore) -> int:
    """Incremental runs over which every project is read once (options.project_rotation_runs): by default a
    day of the connection's schedule, Procore's retry day for a failing hook (webhooks.md), so that a
    change whose webhook was lost is read within a day however often the schedule runs."""
    explicit = (kind.connection.options or {}).get("project_rotation_runs")
    return max(1, int(explicit or runs_per_day(kind.connection.schedule or "") or ROTATION_RUNS))


def _by_number(pid: str) -> tuple[int, str]:
    return (len(pid), pid)


def project_cursor(cursor: Cursor) -> tuple[dt.datetime | None, dict[str, str]]:
    """(where projects without a cursor of their own start, each project's cursor) from a saved cursor.

    Our cursor is ``{"updated_at": <run start>, "id": <page number>, "listed": <start of the last run that
    listed edited projects>, "floor": iso | None, "projects_at": {iso: "id,id,…"}}``: each project's cursor,
    as the projects (comma-separated ids) that have each cursor (``projects_pack``). Saved with every page,
    it maps the 10,200 projects of the bench's company (seven-digit ids) in 82 KB of JSON where
    ``{project id: iso}`` took 479 KB. A cursor with ``projects`` (that map, saved before session 17) is
    read as well. A cursor with neither (a "Resync from date", or one saved before the per-project reads)
    means: every project from its ``updated_at``.
    """
    if "projects_at" in cursor or "projects" in cursor:
        floor = cursor.get("floor")
        if "projects_at" in cursor:
            projects = projects_unpack(cursor.get("projects_at") or {})
        else:
            projects = {str(k): str(v) for k, v in (cursor.get("projects") or {}).items()}
        return (parse_datetime(floor) if floor else None), projects
    start = cursor_start(cursor, False)
    return (start + LOOKBACK if start else None), {}


def projects_pack(projects: dict[str, str]) -> dict[str, str]:
    """``{project id: its cursor}`` as ``{cursor: "id,id,…"}``, the ids in the map's order (Procore's ids
    are integers: none holds a comma). After a run most projects share its start as their cursor, so the
    map packs into a few lists of ids."""
    grouped: dict[str, list[str]] = {}
    for pid, at in projects.items():
        grouped.setdefault(at, []).append(pid)
    return {at: ",".join(pids) for at, pids in grouped.items()}


def projects_unpack(packed: dict[str, str]) -> dict[str, str]:
    """``projects_pack``'s inverse (the projects in id order)."""
    projects = {pid: str(at) for at, pids in packed.items() for pid in str(pids).split(",") if pid}
    return {pid: projects[pid] for pid in sorted(projects, key=_by_number)}


def listed_since(cursor: Cursor) -> str:
    """The start of the last run that listed edited projects (``listed``; before the reconciliation share
    had its own runs, every run's start, ``updated_at``)."""
    return str(cursor.get("listed") or cursor.get("updated_at") or "")


class ProjectList(ProcoreStream):
    """A project-scoped list, read per project with its own window and cursor, in pages of ``PER_PAGE``.

    ``reads`` (set per run by the sync): "both" reads the edited and new projects and the rotating share,
    "changes" the edited and new ones only (the scheduled incremental), "share" the rotating share only
    (its own reconciliation task, queued after each scheduled incremental run).
    """

    has_share = True

    def path(self, project_id: str) -> str:
        raise NotImplementedError

    def params(self, project_id: str) -> dict[str, Any]:
        return {}

    def keep(self, raw: Record) -> bool:
        return True

    def project_ids(
        self, client: HttpClient, changed: tuple[dt.datetime, dt.datetime] | None = None
    ) -> list[str]:
        """The company's projects (compact view: id and names only), by id; with ``changed`` only those
        whose project record was updated in that window (List projects' ``filters[updated_at]``)."""
        params = {
            "company_id": self.kind.company_id,
            "filters[by_status]": "All",
            "serializer_view": "compact",
        }
        if changed is not None:
            params["filters[updated_at]"] = paging.window(*changed)
        ids: set[str] = set()
        for page in paging.read_all(client, Projects.path, params, PER_PAGE):
            ids.update(str(p["id"]) for p in page if isinstance(p, dict) and p.get("id") not in (None, ""))
        return sorted(ids, key=_by_number)

    def chosen(
        self, client: HttpClient, cursor: Cursor, saved: dict[str, str], started: dt.datetime
    ) -> tuple[list[str], list[str]]:
        """(the projects known, the ones this incremental run reads), by id.

        Read: the projects whose record changed since the previous run began (less the settle time and the
        lookback; new projects too, listed for the first time), and the least recently read
        ``ceil(known / project_rotation_runs)`` of the others. Projects gone upstream stay known until a
        full sync lists them no more, or their list answers 404 (``pages`` drops them).
        """
        if self.reads == "share":  # the reconciliation task: the share only, no listing of edited projects
            known, due = sorted(saved, key=_by_number), set()
        else:
            previous = cursor_start({"updated_at": listed_since(cursor)}, False)
            since = (previous - self.kind.settle()) if previous else None
            changed = set(self.project_ids(client, (since, started)) if since else [])
            known = sorted(set(saved) | changed, key=_by_number)
            due = changed | {pid for pid in known if not saved.get(pid)}  # new, or listed but never read
        share = 0 if self.reads == "changes" else math.ceil(len(known) / rotation_runs(self.kind))
        others = sorted((pid for pid in known if pid not in due), key=lambda p: (saved[p], _by_number(p)))
        return known, sorted(due | set(others[:share]), key=_by_number)

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        started = dt.datetime.now(dt.UTC)
        done = make_cursor(started - self.kind.settle(), "")["updated_at"]
        floor, saved = (None, {}) if full else project_cursor(cursor)
        per_page = _per_page(self.kind)
        # When edited projects were last listed: this run's start, unless it lists none (the share alone).
        listed = started.isoformat()
        if saved:
            known, projects = self.chosen(client, cursor, saved, started)
            listed = listed_since(cursor) if self.reads == "share" else listed
        elif self.reads == "share" and not full:
            return  # nothing read per project yet: the incremental reads every project first
        else:  # a full sync, a first run or a "Resync from date": every project listed
            known = projects = self.project_ids(client)
        # Projects no longer listed drop out of the cursor; the others keep theirs until read again, and
        # a project listed but not yet read is kept with "" (a run cut short reads it first next time).
        state: dict[str, str] = {pid: saved.get(pid, "") for pid in known}
        pages = 0

        def page_cursor() -> Cursor:
            # "updated_at" is the run's start and "id" the page number: each page's cursor sorts after the
            # saved one and after the page before (the sync keeps the greatest cursor it is given).
            # "listed": where the next run's listing of edited projects starts (the share alone lists none).
            return {
                "updated_at": started.isoformat(),
                "id": f"{pages:09d}",
                "listed": listed,
                "floor": floor.isoformat() if floor else None,
                "projects_at": projects_pack(state),
            }

        def read(pid: str) -> list[Record] | None:
            since = parse_datetime(state[pid]) - LOOKBACK if state.get(pid) else floor
            params = {**self.params(pid), "filters[updated_at]": paging.window(since, started)}
            try:
                return [
                    {**raw, PROJECT_KEY: pid}
                    for page in paging.read_all(client, self.path(pid), params, per_page)
                    for raw in page
                    if isinstance(raw, dict) and self.keep(raw)
                ]
            except UpstreamError as exc:
                # A project-scoped list answers 404 once the project itself is gone (deleted upstream):
                # nothing to read, and nothing to remember it by (the id sweep tombstones its records).
                if exc.status != 404:
                    raise
                return None

        buffer: list[Record] = []
        for pid, records in _in_order(read, projects, reader_count(self.kind)):
            if records is None:
                state.pop(pid, None)
                continue
            buffer += records
            state[pid] = done
            if len(buffer) >= per_page:  # pages of whole projects, each with its cursor
                pages += 1
                yield Page(_newest_first_seen(buffer), page_cursor())
                buffer = []
        pages += 1
        yield Page(_newest_first_seen(buffer), page_cursor())

    def by_ids(self, client: HttpClient, project_id: str, ids: list[int]) -> list[Record]:
        found: list[Record] = []
        for start in range(0, len(ids), 100):
            params = {**self.params(project_id), "filters[id][]": ids[start : start + 100]}
            for page in paging.read_all(client, self.path(project_id), params, PER_PAGE):
                found += [{**raw, PROJECT_KEY: project_id} for raw in page if isinstance(raw, dict)]
        return found

    def project_ref(self, raw: Record) -> str:
        if raw.get(PROJECT_KEY) in (None, ""):
            raise BadRecord("record without the project it was listed under")
        return str(raw[PROJECT_KEY])


class Milestones(ProjectList):
    """Schedule tasks flagged ``milestone``. Tasks are the project schedule (imported from P6 / MS Project or
    kept in Procore) and the only schedule resource with a milestone flag, a planned finish and an actual
    finish; calendar items and lookaheads have neither."""

    name = "milestones"
    model = Milestone
    entity = "milestone"

    def path(self, project_id: str) -> str:
        return "/rest/v1.0/tasks"

    def params(self, project_id: str) -> dict[str, Any]:
        return {"project_id": project_id}

    def keep(self, raw: Record) -> bool:
        return raw.get("milestone") is True

    def by_ids(self, client: HttpClient, project_id: str, ids: list[int]) -> list[Record]:
        """Show Task for each id (the tasks list has no ``filters[id]``); a task that is gone or no longer a
        milestone is left out, so the webhook processing tombstones it."""
        found: list[Record] = []
        for task_id in ids:
            try:
                data, _ = client.request_json(
                    "GET", f"/rest/v1.0/tasks/{task_id}", params={"project_id": project_id}
                )
            except UpstreamError as exc:
                if exc.status != 404:
                    raise
                continue
            if isinstance(data, dict) and self.keep(data):
                found.append({**data, PROJECT_KEY: project_id})
        return found

    def normalise(self, raw: Record) -> Record:
        return {
            **self.base(raw),
            "project_ref": self.project_ref(raw),
            "name": str(raw.get("name") or raw.get("task_name") or "").strip(),
            "due_date": parse_date(raw.get("finish_datetime")),
            "completed_date": parse_date(raw.get("actual_finish")),
        }


def normalise_co_status(value: Any) -> str:
    """Procore's Change Order Package status to draft / pending / approved / rejected / void (CO_STATUS_MAP);
    a status outside the documented enum is refused (the record is quarantined with the reason)."""
    status = CO_STATUS_MAP.get(str(value or "").strip().lower())
    if status is None:
        raise BadRecord(f"unknown change order status {value!r}")
    return str(status)


class ChangeOrders(ProjectList):
    name = "change_orders"
    model = ChangeOrder
    entity = "change_order"

    def path(self, project_id: str) -> str:
        return "/rest/v1.0/change_order_packages"

    def params(self, project_id: str) -> dict[str, Any]:
        return {"project_id": project_id}

    def normalise(self, raw: Record) -> Record:
        return {
            **self.base(raw),
            "project_ref": self.project_ref(raw),
            "number": str(raw.get("number") or "").strip(),
            "title": str(raw.get("title") or "").strip(),
            "status": normalise_co_status(raw.get("status")),
            "amount": parse_money(raw.get("grand_total")),
            "created_upstream_at": parse_datetime(raw.get("created_at")),
        }


def returned_date(approvers: Any) -> dt.date | None:
    """When a submittal came back: Procore keeps ``returned_date`` per approver (List Submittals v1.1,
    ``approvers[]``), so the submittal is returned once every approver whose response is required (every
    approver, when none is marked) has returned it, on the latest of their dates."""
    if not isinstance(approvers, list) or not approvers:
        return None
    people = [a for a in approvers if isinstance(a, dict)]
    required = [a for a in people if a.get("response_required") is True] or people
    dates = [parse_date(a.get("returned_date")) for a in required]
    if not dates or any(d is None for d in dates):
        return None
    return max(d for d in dates if d is not None)


class Submittals(ProjectList):
    name = "submittals"
    model = Submittal
    entity = "submittal"

    def path(self, project_id: str) -> str:
        return f"/rest/v1.1/projects/{project_id}/submittals"

    def critical(self, raw: Record) -> bool:
        """The tenant's "schedule critical" custom field (``custom_fields.custom_field_<definition id>``,
        ``{"data_type", "value"}``), named per connection in ``options.field_map.schedule_critical``."""
        name = self.kind.mapped("schedule_critical").strip()
        key = f"custom_field_{name}" if name.isdigit() else name
        field = (raw.get("custom_fields") or {}).get(key)
        value = field.get("value") if isinstance(field, dict) else field
        if isinstance(value, dict):  # a list-of-values entry: {"id", "label"}
            value = value.get("label")
        return value is True or str(value).strip().lower() in _TRUE

    def normalise(self, raw: Record) -> Record:
        status = raw.get("status")
        try:
            revision = int(raw.get("revision") or 0)
        except (TypeError, ValueError):
            raise BadRecord(f"revision is not a number: {raw.get('revision')!r}") from None
        return {
            **self.base(raw),
            "project_ref": self.project_ref(raw),
            "vendor_ref": str((raw.get("responsible_contractor") or {}).get("id") or ""),
            "number": str(raw.get("number") or "").strip(),
            "title": str(raw.get("title") or "").strip(),
            "revision": revision,
            "status": str((status.get("name") if isinstance(status, dict) else status) or "").strip(),
            "due_date": parse_date(raw.get("due_date")),
            "returned_date": returned_date(raw.get("approvers")),
            "schedule_critical": self.critical(raw),
            "created_upstream_at": parse_datetime(raw.get("created_at")),
        }
