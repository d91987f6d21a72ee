"""QuickBooks Online's query pager and record shapes (Accounting API v3).

Queries use only the forms of Intuit's "Query operations and syntax" page
(https://developer.intuit.com/app/developer/qbo/docs/learn/explore-the-quickbooks-online-api/data-queries):
``SELECT * FROM <Entity> [WHERE MetaData.LastUpdatedTime >= '<date-time>'] ORDERBY MetaData.LastUpdatedTime
STARTPOSITION n MAXRESULTS 1000`` and ``WHERE Id IN ('1', '2')``. The date-time literal carries an explicit
UTC offset (the docs' literals carry offsets: ``'2011-08-10T10:20:30-0700'``); ORDERBY names one property,
as the docs' example does (a property list is not shown there). ``minorversion=75``: the lowest minor
version Intuit still serves (https://blogs.intuit.com/2025/01/21/changes-to-our-accounting-api-that-may-impact-your-application/).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from apps.connectors.http import HttpClient
from apps.connectors.kinds.base import (
    BadRecord,
    Cursor,
    Page,
    Record,
    Stream,
    cursor_start,
    domain_of,
    keyset_pages,
    parse_date,
    parse_datetime,
    parse_money,
)
from apps.entities.models import FinancialLine, SourceObject

if TYPE_CHECKING:
    from . import QuickBooks

MAX_RESULTS = 1000  # the query endpoint's largest MAXRESULTS
MINOR_VERSION = "75"
# A job's display name starts with its project number ("P-10001 Riverside Clinic"): the exact key to Procore.
PROJECT_NUMBER = re.compile(r"^\s*([A-Za-z]{0,6}-?\d[\w.-]*)\s")


def query_time(moment: dt.datetime) -> str:
    """A query date-time literal: whole seconds in UTC with an explicit offset (QBO times have no
    fractions; rounding down only re-reads)."""
    return f"{moment.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S}+00:00"


def _updated(record: Record) -> dt.datetime:
    return parse_datetime((record.get("MetaData") or {}).get("LastUpdatedTime"))


def _ref(value: Any) -> str:
    return str((value or {}).get("value") or "") if isinstance(value, dict) else ""


class QueryStream(Stream):
    """One QBO entity read with ``SELECT * ... ORDERBY MetaData.LastUpdatedTime, Id``, oldest first."""

    entity_name: ClassVar[str]
    kind: QuickBooks

    def _fetcher(self, client: HttpClient) -> Callable[[dt.datetime | None, int], tuple[list[Record], bool]]:
        path = f"/v3/company/{self.kind.realm}/query"

        def fetch(since: dt.datetime | None, offset: int) -> tuple[list[Record], bool]:
            where = ""
            if since is not None:
                where = f" WHERE MetaData.LastUpdatedTime >= '{query_time(since)}'"
            # QBO's own query language, not SQL: a fixed entity name and a formatted time, no user input.
            # Records sharing a timestamp have no documented tie order: keyset_pages re-reads from the last
            # timestamp of each page, so only a page-full of records in one second relies on it.
            order = f"ORDERBY MetaData.LastUpdatedTime STARTPOSITION {offset + 1} MAXRESULTS {MAX_RESULTS}"
            query = f"SELECT * FROM {self.entity_name}{where} {order}"  # noqa: S608
            data = client.get_json(path, params={"query": query, "minorversion": MINOR_VERSION})
            records = list((data.get("QueryResponse") or {}).get(self.entity_name) or [])
            return records, len(records) >= MAX_RESULTS  # QBO says nothing more: a short page is the last

        return fetch

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        started = dt.datetime.now(dt.UTC)
        yield from keyset_pages(
            self._fetcher(client),
            updated_at=_updated,
            record_id=lambda r: r.get("Id", ""),
            since=cursor_start(cursor, full),
            page_size=MAX_RESULTS,
            cursor=cursor,
            cursor_cap=started - self.kind.settle(),
            explode=self.explode,
        )

    def documents_since(self, client: HttpClient, since: dt.datetime) -> Iterator[list[Record]]:
        """Whole documents (not exploded into lines) updated since ``since``, page by page."""
        for page in keyset_pages(
            self._fetcher(client),
            updated_at=_updated,
            record_id=lambda r: r.get("Id", ""),
            since=since,
            page_size=MAX_RESULTS,
            cursor={},
        ):
            yield page.records

    def base(self, raw: Record) -> Record:
        if not raw.get("Id"):
            raise BadRecord("record without Id")
        return {"external_id": str(raw["Id"]), "source_updated_at": _updated(raw)}


class Customers(QueryStream):
    """Customers and jobs (a job is a Customer with Job=true and a ParentRef) into the crosswalk."""

    name = "customers"
    model = SourceObject
    entity = "source_object"
    entity_name = "Customer"

    def is_job(self, raw: Record) -> bool:
        """A job by the mapped flag field (default ``Job``), or by the mapped customer type when the
        connection names one (a tenant that types its jobs instead of nesting them)."""
        if raw.get(self.kind.mapped("job_flag")):
            return True
        job_type = self.kind.mapped("job_customer_type")
        if not job_type:
            return False
        ref = raw.get("CustomerTypeRef")
        return isinstance(ref, dict) and job_type in (str(ref.get("value") or ""), str(ref.get("name") or ""))

    def normalise(self, raw: Record) -> Record:
        row = self.base(raw)
        name = str(raw.get("DisplayName") or "").strip()
        if self.is_job(raw):
            parent_field = self.kind.mapped("job_parent")
            parent = _ref(raw.get(parent_field))
            if not parent:
                raise BadRecord(f"job without {parent_field}")
            match = PROJECT_NUMBER.match(name + " ")
            return {
                **row,
                "object_type": "job",
                "name": name,
                "parent_ref": parent,
                "match_key": match.group(1) if match else "",
            }
        web = (raw.get("WebAddr") or {}).get("URI")
        email = (raw.get("PrimaryEmailAddr") or {}).get("Address")
        return {
            **row,
            "object_type": "customer",
            "name": name,
            "parent_ref": "",
            "match_key": domain_of(web) or domain_of(email),
        }


class Invoices(QueryStream):
    name = "invoices"
    model = FinancialLine
    entity = "financial_line"
    entity_name = "Invoice"

    def scope(self) -> dict[str, Any]:
        return {"kind": FinancialLine.Kind.INVOICE.value}

    def normalise(self, raw: Record) -> Record:
        return {
            **self.base(raw),
            "kind": FinancialLine.Kind.INVOICE.value,
            "job_ref": _ref(raw.get("CustomerRef")),
            "amount": parse_money(raw.get("TotalAmt")),
            "balance": parse_money(raw.get("Balance"), required=False),
            "txn_date": parse_date(raw.get("TxnDate")),
            "due_date": parse_date(raw.get("DueDate")),
        }


class Estimates(QueryStream):
    name = "estimates"
    model = FinancialLine
    entity = "financial_line"
    entity_name = "Estimate"

    def scope(self) -> dict[str, Any]:
        return {"kind": FinancialLine.Kind.ESTIMATE.value}

    def normalise(self, raw: Record) -> Record:
        return {
            **self.base(raw),
            "kind": FinancialLine.Kind.ESTIMATE.value,
            "job_ref": _ref(raw.get("CustomerRef")),
            "amount": parse_money(raw.get("TotalAmt")),
            "balance": None,
            "txn_date": parse_date(raw.get("TxnDate")),
            "due_date": parse_date(raw.get("ExpirationDate")),
        }


class ExpenseLines(QueryStream):
    """Bills and purchases: one financial line per line charged to a job (overhead is not project cost)."""

    model = FinancialLine
    entity = "financial_line"
    line_items = True
    line_kind: ClassVar[str]

    def scope(self) -> dict[str, Any]:
        return {"kind": self.line_kind}

    def explode(self, records: list[Record]) -> list[Record]:
        lines = []
        for txn in records:
            for line in txn.get("Line") or []:
                detail = line.get(line.get("DetailType") or "") or {}
                if isinstance(detail, dict) and _ref(detail.get("CustomerRef")):
                    # The line and the fields of its document it needs; the payload stays small in quarantine.
                    head = {k: txn.get(k) for k in ("Id", "MetaData", "TxnDate", "DueDate", "DocNumber")}
                    lines.append({**head, "_line": line})
        return lines

    def document_version(self, raw: Record, now: dt.datetime) -> dt.datetime:
        try:
            version: dt.datetime = self.base(raw)["source_updated_at"]
        except BadRecord:
            return now
        return version

    def normalise(self, raw: Record) -> Record:
        line = raw.get("_line") or {}
        if not line.get("Id"):
            raise BadRecord("expense line without Id")
        detail = line.get(line.get("DetailType") or "") or {}
        row = self.base(raw)
        return {
            **row,
            "external_id": f"{row['external_id']}:{line['Id']}",
            "kind": self.line_kind,
            "job_ref": _ref(detail.get("CustomerRef")),
            "amount": parse_money(line.get("Amount")),
            "balance": None,
            "txn_date": parse_date(raw.get("TxnDate")),
            "due_date": parse_date(raw.get("DueDate")),
        }


class Bills(ExpenseLines):
    name = "bills"
    entity_name = "Bill"
    line_kind = FinancialLine.Kind.BILL.value


class Purchases(ExpenseLines):
    name = "purchases"
    entity_name = "Purchase"
    line_kind = FinancialLine.Kind.PURCHASE.value
