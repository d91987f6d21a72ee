"""Procore's list pager and record shapes (REST v1.0 / v1.1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from apps.connectors.http import HttpClient, UpstreamError
from apps.connectors.kinds.base import (
    BadRecord,
    Cursor,
    Page,
    Record,
    Stream,
    cursor_start,
    keyset_pages,
    parse_date,
    parse_datetime,
    parse_money,
)
from apps.entities.models import ChangeOrder, Milestone, Project, Submittal, Vendor

if TYPE_CHECKING:
    from . import Procore

PER_PAGE = 1000  # the list endpoints' largest per_page
BEGINNING = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # filters[updated_at] wants both ends of the range
SCHEDULE_STATUSES = {"on_track", "at_risk", "behind"}
CO_STATUSES = {s.value for s in ChangeOrder.Status}


def _iso(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S}Z"


def _updated(record: Record) -> dt.datetime:
    return parse_datetime(record.get("updated_at"))


def _has_next(link_header: str | None) -> bool:
    return any('rel="next"' in part for part in (link_header or "").split(","))


class ListStream(Stream):
    """A Procore list endpoint filtered by ``filters[updated_at]=<since>...<run start>``, oldest first."""

    path: ClassVar[str]  # with {company} for the company id
    params: ClassVar[dict[str, str]] = {}
    kind: Procore

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        started = dt.datetime.now(dt.UTC)
        path = self.path.format(company=self.kind.company_id)
        # options.per_page lowers the page size (never above the API's cap), e.g. to keep pages short.
        per_page = min(PER_PAGE, int((self.kind.connection.options or {}).get("per_page") or PER_PAGE))

        def fetch(since: dt.datetime | None, offset: int) -> tuple[list[Record], bool]:
            params: dict[str, Any] = {
                **self.query_params(),
                "filters[updated_at]": f"{_iso(since or BEGINNING)}...{_iso(started)}",
                "sort": "updated_at",
                "page": offset // per_page + 1,  # offsets are whole pages (keyset_pages steps by full pages)
                "per_page": per_page,
            }
            data, response = client.request_json("GET", path, params=params)
            if not isinstance(data, list):
                raise UpstreamError(
                    f"GET {path}: answered {type(data).__name__}, expected a list", status=200
                )
            return data, _has_next(response.headers.get("Link"))

        yield from keyset_pages(
            fetch,
            updated_at=_updated,
            record_id=lambda r: r.get("id", ""),
            since=cursor_start(cursor, full),
            page_size=per_page,
            cursor=cursor,
            cursor_cap=started - self.kind.settle(),
        )

    def query_params(self) -> dict[str, str]:
        return dict(self.params)

    def base(self, raw: Record) -> Record:
        if raw.get("id") in (None, ""):
            raise BadRecord("record without id")
        return {"external_id": str(raw["id"]), "source_updated_at": _updated(raw)}

    def project_ref(self, raw: Record) -> str:
        if raw.get("project_id") in (None, ""):
            raise BadRecord("record without project_id")
        return str(raw["project_id"])


class Projects(ListStream):
    name = "projects"
    model = Project
    entity = "project"
    path = "/rest/v1.0/projects"

    def query_params(self) -> dict[str, str]:
        return {"company_id": self.kind.company_id}

    def normalise(self, raw: Record) -> Record:
        status = str(raw.get("schedule_status") or "").strip().lower().replace(" ", "_").replace("-", "_")
        if status and status not in SCHEDULE_STATUSES:
            raise BadRecord(f"unknown schedule_status {raw.get('schedule_status')!r}")
        return {
            **self.base(raw),
            "name": str(raw.get("name") or "").strip(),
            "number": str(raw.get("project_number") or "").strip(),
            "accounting_ref": str(raw.get("origin_id") or "").strip(),
            "contract_value": parse_money(raw.get("total_value"), required=False),
            "schedule_status": status,
            "start_date": parse_date(raw.get("start_date")),
            "completion_date": parse_date(raw.get("completion_date")),
        }


class Vendors(ListStream):
    name = "vendors"
    model = Vendor
    entity = "vendor"
    path = "/rest/v1.0/companies/{company}/vendors"

    def normalise(self, raw: Record) -> Record:
        name = str(raw.get("name") or "").strip()
        if not name:
            raise BadRecord("vendor without a name")
        return {**self.base(raw), "name": name, "email": str(raw.get("email_address") or "").strip().lower()}


class Milestones(ListStream):
    name = "milestones"
    model = Milestone
    entity = "milestone"
    path = "/rest/v1.0/companies/{company}/schedule/tasks"
    params = {"filters[milestone]": "true"}

    def normalise(self, raw: Record) -> Record:
        return {
            **self.base(raw),
            "project_ref": self.project_ref(raw),
            "name": str(raw.get("name") or "").strip(),
            "due_date": parse_date(raw.get("finish")),
            "completed_date": parse_date(raw.get("actual_finish")),
        }


def normalise_co_status(value: Any) -> str:
    """Procore's words to ours: 'pending - in review' and the like are pending; unknown words are refused."""
    status = str(value or "").strip().lower()
    if status.startswith("pending"):
        return ChangeOrder.Status.PENDING.value
    if status in CO_STATUSES:
        return status
    raise BadRecord(f"unknown change order status {value!r}")


class ChangeOrders(ListStream):
    name = "change_orders"
    model = ChangeOrder
    entity = "change_order"
    path = "/rest/v1.0/companies/{company}/change_order_packages"

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


class Submittals(ListStream):
    name = "submittals"
    model = Submittal
    entity = "submittal"
    path = "/rest/v1.1/companies/{company}/submittals"

    def normalise(self, raw: Record) -> Record:
        status = raw.get("status")
        critical = ((raw.get("custom_fields") or {}).get("schedule_critical") or {}).get("value")
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
            "returned_date": parse_date(raw.get("returned_date")),
            "schedule_critical": critical is True or str(critical).lower() in ("true", "1", "yes"),
            "created_upstream_at": parse_datetime(raw.get("created_at")),
        }
