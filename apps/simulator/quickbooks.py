"""QuickBooks Online v3: the query language, single reads and the Attachable (note) write-back."""

from __future__ import annotations

import operator
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from .common import QBO_TZ, Request, Response, json_response, money_num, now_ms, parse_instant, qbo_time
from .records import REALM_ID, Company, QboCustomer, QboLine, QboTxn, QboVendor
from .state import SimState

MAX_RESULTS = 1000
DEFAULT_MAX_RESULTS = 100
ENTITIES = ("Customer", "Invoice", "Bill", "Purchase", "Estimate", "Vendor")
USD = {"value": "USD", "name": "United States Dollar"}
QboRecord = QboCustomer | QboVendor | QboTxn


def _time() -> str:
    ms = now_ms()
    return qbo_time(ms)[:19] + f".{ms % 1000:03d}" + qbo_time(ms)[19:]


def fault(status: int, message: str, detail: str, code: str, kind: str = "ValidationFault") -> Response:
    return json_response(
        status,
        {
            "Fault": {"Error": [{"Message": message, "Detail": detail, "code": code}], "type": kind},
            "time": _time(),
        },
        [("intuit_tid", str(uuid.uuid4()))],
    )


def _meta(r: QboRecord) -> dict[str, str]:
    return {"CreateTime": qbo_time(r.created), "LastUpdatedTime": qbo_time(r.updated)}


def _ref(value: str | None, table: dict[str, Any] | None) -> dict[str, str]:
    ref = {"value": value or ""}
    if table is not None and value in table:
        ref["name"] = table[value].display_name
    return ref


def _expense_line(n: int, line: QboLine) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "AccountRef": {"value": "58", "name": "Job Expenses:Job Materials"},
        "BillableStatus": line.billable,
        "TaxCodeRef": {"value": "NON"},
    }
    if line.job_id is not None:
        detail["CustomerRef"] = {"value": line.job_id}
    return {
        "Id": str(n),
        "LineNum": n,
        "Description": line.description,
        "Amount": money_num(line.amount),
        "DetailType": "AccountBasedExpenseLineDetail",
        "AccountBasedExpenseLineDetail": detail,
    }


def _sales_lines(total: int) -> list[dict[str, Any]]:
    return [
        {
            "Id": "1",
            "LineNum": 1,
            "Description": "Progress billing",
            "Amount": money_num(total),
            "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Construction Services"}},
        },
        {"Amount": money_num(total), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}},
    ]


def render(r: QboRecord, company: Company | None = None) -> dict[str, Any]:
    """A record in QuickBooks' JSON shape (amounts are JSON numbers)."""
    customers = company.qbo_customers if company else None
    base: dict[str, Any] = {"Id": r.id, "SyncToken": str(r.sync_token), "domain": "QBO", "sparse": False}
    if isinstance(r, QboCustomer):
        base.update(
            {
                "DisplayName": r.display_name,
                "FullyQualifiedName": r.fully_qualified_name,
                "PrintOnCheckName": r.display_name,
                "Job": r.is_job,
                "BillWithParent": r.is_job,
                "Active": r.active,
                "Balance": money_num(r.balance),
                "Taxable": False,
                "PreferredDeliveryMethod": "Email",
                "CurrencyRef": USD,
            }
        )
        if r.company_name:
            base["CompanyName"] = r.company_name
        if r.email:
            base["PrimaryEmailAddr"] = {"Address": r.email}
        if r.web:
            base["WebAddr"] = {"URI": r.web}
        if r.parent_id:
            base.update({"ParentRef": _ref(r.parent_id, customers), "Level": 1})
        if r.notes:
            base["Notes"] = r.notes
    elif isinstance(r, QboVendor):
        base.update(
            {
                "DisplayName": r.display_name,
                "CompanyName": r.display_name,
                "PrintOnCheckName": r.display_name,
                "PrimaryEmailAddr": {"Address": r.email},
                "PrimaryPhone": {"FreeFormNumber": r.phone},
                "Active": r.active,
                "Vendor1099": False,
                "Balance": 0,
                "CurrencyRef": USD,
            }
        )
    else:
        base.update(
            {
                "DocNumber": r.doc_number,
                "TxnDate": r.txn_date.isoformat(),
                "CurrencyRef": USD,
                "TotalAmt": money_num(r.total),
            }
        )
        vendors = company.qbo_vendors if company else None
        if r.kind in ("Invoice", "Estimate"):
            base.update({"CustomerRef": _ref(r.customer_id, customers), "Line": _sales_lines(r.total)})
        else:
            base["Line"] = [_expense_line(n, line) for n, line in enumerate(r.lines, start=1)]
        if r.kind == "Invoice":
            base.update(
                {
                    "DueDate": r.due_date.isoformat() if r.due_date else None,
                    "Balance": money_num(r.balance),
                    "SalesTermRef": {"value": "3", "name": "Net 30"},
                }
            )
        elif r.kind == "Estimate":
            base["TxnStatus"] = r.status
        elif r.kind == "Bill":
            base.update(
                {
                    "VendorRef": _ref(r.vendor_id, vendors),
                    "Balance": money_num(r.balance),
                    "DueDate": r.due_date.isoformat() if r.due_date else None,
                    "APAccountRef": {"value": "33", "name": "Accounts Payable (A/P)"},
                }
            )
        else:
            account = {"Cash": ("35", "Checking"), "Check": ("35", "Checking"), "CreditCard": ("41", "Visa")}
            value, name = account.get(r.status, ("35", "Checking"))
            base.update(
                {
                    "PaymentType": r.status,
                    "AccountRef": {"value": value, "name": name},
                    "EntityRef": {**_ref(r.vendor_id, vendors), "type": "Vendor"},
                }
            )
        if r.memo:
            base["PrivateNote"] = r.memo
    base["MetaData"] = _meta(r)
    return base


def tables(company: Company) -> dict[str, dict[str, Any]]:
    return {
        "Customer": company.qbo_customers,
        "Invoice": company.qbo_invoices,
        "Bill": company.qbo_bills,
        "Purchase": company.qbo_purchases,
        "Estimate": company.qbo_estimates,
        "Vendor": company.qbo_vendors,
    }


# ---- the query language -----------------------------------------------------------------------------


class QueryError(ValueError):
    pass


@dataclass
class Query:
    entity: str
    count: bool
    since: tuple[int | None, bool, int | None, bool] = (None, False, None, False)  # lo, lo_open, hi, hi_open
    predicates: list[Callable[[Any], bool]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    start: int = 1
    max_results: int = DEFAULT_MAX_RESULTS


_TOKEN = re.compile(r"\s*(?:('(?:[^'\\]|\\.)*')|(>=|<=|!=|=|<|>|\(|\)|,)|([A-Za-z_][\w.]*|\*|-?\d+))")
_FIELDS = {
    "metadata.lastupdatedtime": "MetaData.LastUpdatedTime",
    "metadata.createtime": "MetaData.CreateTime",
    "id": "Id",
    "job": "Job",
    "active": "Active",
}


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip().rstrip(";")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f'Encountered "{text[pos : pos + 10]}" at column {pos + 1}')
        out.append(m.group(0).strip())
        pos = m.end()
    return out


def _literal(token: str) -> str:
    return token[1:-1].replace("\\'", "'") if token.startswith("'") else token


# The date-time literals Intuit's docs show: a date ('2015-03-01'), a local date-time, or one with an offset
# ('2011-08-10T10:20:30-0700', '2015-12-23T09:00-07:00'). Neither "Z" nor fractions of a second appear.
_DOCUMENTED_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?([+-]\d{2}:?\d{2})?)?$")


def _time_ms(text: str) -> int:
    # An unencoded "+" arrives as a space: parse_instant restores it, and so does this check.
    candidate = re.sub(r"(\d) (\d\d:?\d\d)$", r"\1+\2", text.strip())
    if not _DOCUMENTED_TIME.match(candidate):
        raise QueryError(f"invalid date-time '{text}': not a documented literal form")
    try:
        return parse_instant(candidate, QBO_TZ)
    except ValueError as exc:
        raise QueryError(f"invalid date-time '{text}'") from exc


# The documented operators (IN, =, <, >, <=, >=, LIKE); LIKE is not served here. "!=" is not one of them.
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _predicate(attr: str, op: str, want: Any) -> Callable[[Any], bool]:
    compare = _OPS[op]
    return lambda record: bool(compare(getattr(record, attr, None), want))


def _member(ids: frozenset[str]) -> Callable[[Any], bool]:
    return lambda record: record.id in ids


def parse_query(text: str) -> Query:
    toks = _tokens(text)
    upper = [t.upper() for t in toks]
    if upper[:1] != ["SELECT"]:
        raise QueryError("query must start with SELECT")
    if upper[1:5] == ["COUNT", "(", "*", ")"]:
        count, i = True, 5
    elif upper[1:2] == ["*"]:
        count, i = False, 2
    else:
        raise QueryError("only SELECT * and SELECT COUNT(*) are supported")
    if upper[i : i + 1] != ["FROM"] or i + 1 >= len(toks):
        raise QueryError("expected FROM <Entity>")
    entity = next((e for e in ENTITIES if e.upper() == upper[i + 1]), None)
    if entity is None:
        raise QueryError(f"QueryValidationError: Invalid entity name {toks[i + 1]}")
    query, i = Query(entity, count), i + 2
    lo: int | None = None
    hi: int | None = None
    lo_open = hi_open = False
    if upper[i : i + 1] == ["WHERE"]:
        i += 1
        while True:
            if i + 2 >= len(toks):
                raise QueryError("incomplete WHERE condition")
            name = _FIELDS.get(toks[i].lower())
            if name is None or (name == "Job" and entity != "Customer"):
                raise QueryError(f"QueryValidationError: property '{toks[i]}' is not queryable")
            op = upper[i + 1]
            if op == "IN":
                if name != "Id" or toks[i + 2] != "(":
                    raise QueryError("IN is supported on Id with a parenthesised list")
                j, ids = i + 3, set()
                while j < len(toks) and toks[j] != ")":
                    if toks[j] != ",":
                        ids.add(_literal(toks[j]))
                    j += 1
                if j >= len(toks):
                    raise QueryError("unterminated IN list")
                query.predicates.append(_member(frozenset(ids)))
                i = j + 1
            else:
                value = _literal(toks[i + 2])
                i += 3
                if name == "MetaData.LastUpdatedTime":
                    ms = _time_ms(value)
                    if op in (">", ">=") and (lo is None or ms >= lo):
                        lo, lo_open = ms, op == ">"
                    elif op in ("<", "<=") and (hi is None or ms <= hi):
                        hi, hi_open = ms, op == "<"
                    elif op == "=":
                        query.predicates.append(_predicate("updated", op, ms))
                    elif op not in (">", ">=", "<", "<="):
                        raise QueryError(f"operator {op} is not supported on {name}")
                elif name == "MetaData.CreateTime":
                    if op not in _OPS:
                        raise QueryError(f"operator {op} is not supported on {name}")
                    query.predicates.append(_predicate("created", op, _time_ms(value)))
                else:
                    if op != "=":
                        raise QueryError(f"operator {op} is not supported on {name}")
                    attr = {"Id": "id", "Job": "is_job", "Active": "active"}[name]
                    want: Any = value if name == "Id" else value.lower() == "true"
                    if name != "Id" and value.lower() not in ("true", "false"):
                        raise QueryError(f"{name} must be true or false")
                    query.predicates.append(_predicate(attr, op, want))
            if upper[i : i + 1] != ["AND"]:
                break
            i += 1
    query.since = (lo, lo_open, hi, hi_open)
    if upper[i : i + 2] == ["ORDER", "BY"]:
        raise QueryError('Encountered "ORDER BY"; the clause is ORDERBY')
    # ORDERBY one property, optionally ASC or DESC: the form Intuit's docs show
    # ("ORDERBY MetaData.LastUpdatedTime DESC"); a list of properties is not shown, so not accepted.
    if upper[i : i + 1] == ["ORDERBY"]:
        i += 1
        name = _FIELDS.get(toks[i].lower()) if i < len(toks) else None
        if name not in ("MetaData.LastUpdatedTime", "MetaData.CreateTime", "Id"):
            raise QueryError(f"cannot ORDERBY {toks[i] if i < len(toks) else '<end>'}")
        descending = upper[i + 1 : i + 2] == ["DESC"]
        i += 2 if upper[i + 1 : i + 2] in (["DESC"], ["ASC"]) else 1
        query.order.append((str(name), descending))
        if upper[i : i + 1] == [","]:
            raise QueryError('Encountered ","; ORDERBY takes one property')
    seen: list[str] = []
    while i < len(toks):
        word = upper[i]
        if (
            word not in ("STARTPOSITION", "MAXRESULTS")
            or word in seen
            or (word == "STARTPOSITION" and "MAXRESULTS" in seen)
            or i + 1 >= len(toks)
            or not toks[i + 1].lstrip("-").isdigit()
        ):
            raise QueryError(f'Encountered "{toks[i]}"; expected STARTPOSITION n MAXRESULTS n, in that order')
        seen.append(word)
        number = int(toks[i + 1])
        if word == "STARTPOSITION":
            if number < 1:
                raise QueryError("STARTPOSITION is 1-based and must be at least 1")
            query.start = number
        else:
            if number < 1 or number > MAX_RESULTS:
                raise QueryError(f"MAXRESULTS must be between 1 and {MAX_RESULTS} (was {number})")
            query.max_results = number
        i += 2
    return query


def _sorted(records: list[Any], order: list[tuple[str, bool]]) -> list[Any]:
    # Views are sorted by (LastUpdatedTime, numeric Id): ties keep a stable order between requests.
    if not order or order == [("MetaData.LastUpdatedTime", False)]:
        return records
    if order == [("MetaData.LastUpdatedTime", True)]:
        return records[::-1]
    getters = {
        "MetaData.LastUpdatedTime": lambda r: r.updated,
        "MetaData.CreateTime": lambda r: r.created,
        "Id": lambda r: int(r.id),
    }
    result = list(records)
    for name, descending in reversed(order):  # stable multi-key sort
        result.sort(key=getters[name], reverse=descending)
    return result


def run_query(state: SimState, req: Request, text: str) -> Response:
    try:
        query = parse_query(text)
    except QueryError as exc:
        return fault(400, "Error parsing query", f"QueryParserError: {exc}", "4000")
    company = state.company
    with company.lock:
        lo, lo_open, hi, hi_open = query.since
        records = company.view(tables(company)[query.entity]).between(lo, hi, lo_open, hi_open)
        for predicate in query.predicates:
            records = [r for r in records if predicate(r)]
        if query.count:
            return json_response(200, {"QueryResponse": {"totalCount": len(records)}, "time": _time()})
        records = _sorted(records, query.order)
        offset = query.start - 1
        page = records[offset : offset + query.max_results]
        if req.duplicate_page and 0 < offset <= len(records):
            page = [records[offset - 1], *page]
        rendered = [render(r, company) for r in page]
    body: dict[str, Any] = {}
    if rendered:
        body = {query.entity: rendered, "startPosition": query.start, "maxResults": len(rendered)}
    return json_response(200, {"QueryResponse": body, "time": _time()}, [("intuit_tid", str(uuid.uuid4()))])


# ---- routing ----------------------------------------------------------------------------------------


def handle(state: SimState, req: Request) -> Response | None:
    m = re.fullmatch(r"/v3/company/([^/]+)/([a-z]+)(?:/([^/]+))?/?", req.path)
    if not req.path.startswith("/v3/company/"):
        return None
    if not state.authorized("quickbooks", req):
        return json_response(
            401,
            {
                "fault": {
                    "error": [
                        {
                            "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                            "detail": "Token invalid or expired",
                            "code": "3200",
                        }
                    ],
                    "type": "AUTHENTICATION",
                },
                "time": _time(),
            },
            [("WWW-Authenticate", 'Bearer realm="Intuit"')],
        )
    if m is None:
        return fault(404, "Unsupported Operation", f"Operation {req.path} is not supported.", "114")
    realm, resource, record_id = m.groups()
    if realm != REALM_ID:
        return fault(
            403,
            "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
            f"Not authorized for realm {realm}",
            "3100",
            "AUTHENTICATION",
        )
    if resource == "query" and record_id is None:
        if req.method == "GET":
            return run_query(state, req, req.q("query") or "")
        if req.method == "POST":
            return run_query(state, req, unquote_plus(req.body.decode("utf-8")))
    if resource == "attachable" and req.method == "POST" and record_id is None:
        return attach_note(state, req)
    if resource == "cdc" and req.method == "GET" and record_id is None:
        return change_data_capture(state, req)
    entity = next((e for e in ENTITIES if e.lower() == resource), None)
    if entity and record_id and req.method == "GET":
        record = tables(state.company)[entity].get(record_id)
        if record is None:
            return fault(
                400,
                "Object Not Found",
                "Object Not Found : Something you're trying to use has been made "
                "inactive. Check the fields with accounts, customers, items, vendors or employees.",
                "610",
            )
        return json_response(200, {entity: render(record, state.company), "time": _time()})
    return fault(400, "Unsupported Operation", f"Operation {req.method} {resource} is not supported.", "114")


# ---- change data capture -----------------------------------------------------------------------------

CDC_MAX_OBJECTS = 1000  # per entity per response
CDC_LOOKBACK_DAYS = 30
# Entities the CDC operation does not serve (the docs' exception list).
CDC_UNSUPPORTED = ("JournalCode", "TaxAgency", "TimeActivity", "TaxCode", "TaxRate")


def change_data_capture(state: SimState, req: Request) -> Response:
    """``GET /v3/company/{realmId}/cdc?entities=<list>&changedSince=<dateTime>``: every listed entity
    changed since then, full payloads, deleted ones as ``{"Id", "status": "Deleted", "MetaData"}``; at most
    1000 objects per entity; changedSince within the last 30 days.
    https://developer.intuit.com/app/developer/qbo/docs/learn/explore-the-quickbooks-online-api/change-data-capture
    """
    names = [n.strip() for n in (req.q("entities") or "").split(",") if n.strip()]
    since_text = req.q("changedSince") or ""
    if not names or not since_text:
        return fault(400, "Request has invalid or unsupported property", "entities and changedSince", "2010")
    try:
        since = _time_ms(since_text)
    except QueryError as exc:
        return fault(400, "Request has invalid or unsupported property", f"changedSince: {exc}", "2010")
    if since < now_ms() - CDC_LOOKBACK_DAYS * 86_400_000:
        return fault(
            400,
            "Request has invalid or unsupported property",
            f"changedSince must be within the last {CDC_LOOKBACK_DAYS} days",
            "2010",
        )
    company = state.company
    responses: list[dict[str, Any]] = []
    with company.lock:
        for name in names:
            entity = next((e for e in ENTITIES if e.lower() == name.lower()), None)
            if entity is None or name in CDC_UNSUPPORTED:
                return fault(400, "Unsupported Operation", f"CDC is not supported for {name}", "114")
            live = [
                (r.updated, int(r.id), render(r, company))
                for r in company.view(tables(company)[entity]).between(since, None)
            ]
            gone = [
                (
                    ms,
                    int(rid),
                    {
                        "domain": "QBO",
                        "status": "Deleted",
                        "Id": rid,
                        "MetaData": {"LastUpdatedTime": qbo_time(ms)},
                    },
                )
                for rid, ms in company.qbo_deleted.get(entity, {}).items()
                if ms >= since
            ]
            changed = [doc for _, _, doc in sorted(live + gone, key=lambda t: (t[0], t[1]))]
            changed = changed[:CDC_MAX_OBJECTS]
            if changed:
                responses.append({entity: changed, "startPosition": 1, "maxResults": len(changed)})
    body = {"CDCResponse": [{"QueryResponse": responses or [{}]}], "time": _time()}
    return json_response(200, body, [("intuit_tid", str(uuid.uuid4()))])


def merge_customers(company: Company, survivor_id: str, merged_id: str) -> int:
    """Merge customer ``merged_id`` into ``survivor_id`` as QuickBooks does: the merged-away customer is
    deleted and its transactions now belong to the survivor. Returns the merge's time (epoch ms)."""
    with company.lock:
        survivor = company.qbo_customers[survivor_id]
        stamp = company.write_time()
        for table in (company.qbo_invoices, company.qbo_estimates):
            for txn in table.values():
                if txn.customer_id == merged_id:
                    txn.customer_id, txn.updated, txn.sync_token = survivor_id, stamp, txn.sync_token + 1
        for customer in company.qbo_customers.values():
            if customer.parent_id == merged_id:
                customer.parent_id, customer.updated = survivor_id, stamp
        survivor.updated, survivor.sync_token = stamp, survivor.sync_token + 1
        company.delete("quickbooks", "customer", merged_id)
        company.qbo_deleted["Customer"][merged_id] = stamp
        company.changed()
        return stamp


def attach_note(state: SimState, req: Request) -> Response:
    request_id = req.q("requestid")
    if request_id and request_id in state.idempotent:
        return state.idempotent[request_id]  # QuickBooks replays the first answer for a repeated requestid
    try:
        body = req.json()
        note = str(body["Note"])
        refs = [
            (str(r["EntityRef"]["type"]), str(r["EntityRef"]["value"])) for r in body.get("AttachableRef", [])
        ]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return fault(400, "Request has invalid or unsupported property", f"Property Name:{exc!s}", "2010")
    known = tables(state.company)
    for entity, value in refs:
        if entity not in known or value not in known[entity]:
            return fault(
                400, "Invalid Reference Id", f"Invalid Reference Id : {entity} {value} does not exist", "2500"
            )
    attachable_id = str(5_000_000 + state.next_id())
    stamp = now_ms()
    for entity, value in refs or [("", "")]:
        state.record_note("quickbooks", value, note, request_id, entity_type=entity, id=attachable_id)
    payload = {
        "Attachable": {
            "Id": attachable_id,
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "Note": note,
            "AttachableRef": body.get("AttachableRef", []),
            "MetaData": {"CreateTime": qbo_time(stamp), "LastUpdatedTime": qbo_time(stamp)},
        },
        "time": _time(),
    }
    response = json_response(200, payload)
    if request_id:
        state.idempotent[request_id] = response
    return response
