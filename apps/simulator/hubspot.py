"""HubSpot CRM v3: companies (search, list, read), owners, notes write-back."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from .common import Request, Response, hubspot_time, json_response, now_ms, parse_instant
from .records import HsCompany, HsOwner
from .state import SimState

DEFAULT_PROPERTIES = ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name")
ALL_PROPERTIES = (
    *DEFAULT_PROPERTIES,
    "hubspot_owner_id",
    "contract_renewal_date",
    "city",
    "state",
    "phone",
    "industry",
    "numberofemployees",
    "lifecyclestage",
)
TIME_PROPERTIES = {"createdate", "hs_lastmodifieddate"}
SEARCH_LIMIT = 200
LIST_LIMIT = 100
OWNERS_LIMIT = 500
NOTE_TO_COMPANY = 190
MAX_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 6, 18


def error(status: int, message: str, category: str, **extra: Any) -> Response:
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }
    return json_response(status, body)


def company_properties(c: HsCompany) -> dict[str, str | None]:
    return {
        "createdate": hubspot_time(c.created),
        "domain": c.domain,
        "hs_lastmodifieddate": hubspot_time(c.updated),
        "hs_object_id": c.id,
        "name": c.name,
        "hubspot_owner_id": c.owner_id,
        "contract_renewal_date": c.renewal,
        "city": c.city,
        "state": c.state,
        "phone": c.phone,
        "industry": "CONSTRUCTION",
        "numberofemployees": str(c.employees),
        "lifecyclestage": "customer",
    }


def render_company(c: HsCompany, properties: list[str] | None) -> dict[str, Any]:
    """One company object; ``properties`` None = HubSpot's defaults.  Unknown names are ignored."""
    values = company_properties(c)
    wanted = list(properties) if properties else list(DEFAULT_PROPERTIES)
    # A property never set is left out: HubSpot's OpenAPI types every property value as a string
    # (SimplePublicObject.properties in PublicApiSpecs/CRM/Companies/Rollouts/424/v3/companies.json).
    props = {name: values[name] for name in wanted if values.get(name) is not None}
    for always in ("createdate", "hs_lastmodifieddate", "hs_object_id"):
        props[always] = values[always]
    return {
        "id": c.id,
        "properties": props,
        "createdAt": hubspot_time(c.created),
        "updatedAt": hubspot_time(c.updated),
        "archived": False,
    }


def render_owner(o: HsOwner) -> dict[str, Any]:
    return {
        "id": o.id,
        "email": o.email,
        "type": "PERSON",
        "firstName": o.first_name,
        "lastName": o.last_name,
        "userId": o.user_id,
        "userIdIncludingInactive": o.user_id,
        "createdAt": hubspot_time(o.created),
        "updatedAt": hubspot_time(o.updated),
        "archived": False,
    }


def handle(state: SimState, req: Request) -> Response | None:
    if not req.path.startswith("/crm/v3/"):
        return None
    if not state.authorized("hubspot", req):
        return error(
            401,
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
            "you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            "INVALID_AUTHENTICATION",
        )
    path, method = req.path.rstrip("/"), req.method
    if path == "/crm/v3/objects/companies/search" and method == "POST":
        return search(state, req)
    if path == "/crm/v3/objects/companies" and method == "GET":
        return list_companies(state, req)
    if (m := re.fullmatch(r"/crm/v3/objects/companies/([^/]+)", path)) and method == "GET":
        company = state.company.hs_companies.get(m.group(1))
        if company is None:
            return error(
                404,
                "Object not found.  objectId are usually numeric.",
                "OBJECT_NOT_FOUND",
                context={"id": [m.group(1)]},
            )
        return json_response(200, render_company(company, _csv(req, "properties")))
    if path == "/crm/v3/owners" and method == "GET":
        return list_owners(state, req)
    if (m := re.fullmatch(r"/crm/v3/owners/([^/]+)", path)) and method == "GET":
        owner = state.company.owners.get(m.group(1))
        return (
            json_response(200, render_owner(owner))
            if owner
            else error(404, "Owner not found", "OBJECT_NOT_FOUND")
        )
    if path == "/crm/v3/objects/notes" and method == "POST":
        return create_note(state, req)
    if path == "/crm/v3/objects/notes/search" and method == "POST":
        return search_notes(state, req)
    return error(404, f"Unable to route {method} {req.path}", "OBJECT_NOT_FOUND")


def _csv(req: Request, name: str) -> list[str] | None:
    values = [v for raw in req.query.get(name, []) for v in raw.split(",") if v]
    return values or None


# ---- search -----------------------------------------------------------------------------------------


def _comparable(prop: str, raw: Any) -> int | float | str:
    text = str(raw)
    if prop in TIME_PROPERTIES or prop == "contract_renewal_date":
        return int(text) if text.lstrip("-").isdigit() else parse_instant(text)
    try:
        return float(text)
    except ValueError:
        return text.lower()


def _record_value(c: HsCompany, prop: str) -> int | float | str | None:
    if prop == "hs_lastmodifieddate":
        return c.updated
    if prop == "createdate":
        return c.created
    raw = company_properties(c).get(prop)
    return None if raw in (None, "") else _comparable(prop, raw)


def _predicate(flt: dict[str, Any]) -> Callable[[HsCompany], bool]:
    prop, op = flt.get("propertyName"), str(flt.get("operator", "EQ")).upper()
    if not isinstance(prop, str):
        raise ValueError("filter is missing propertyName")
    if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        want = op == "HAS_PROPERTY"
        return lambda c: (_record_value(c, prop) is not None) == want
    if op in ("IN", "NOT_IN"):
        members = {_comparable(prop, v) for v in flt.get("values") or []}
        inside = op == "IN"
        return lambda c: (_record_value(c, prop) in members) == inside
    if "value" not in flt:
        raise ValueError(f"filter on {prop} with operator {op} needs a value")
    value = _comparable(prop, flt["value"])
    high = _comparable(prop, flt.get("highValue", flt["value"]))
    tests: dict[str, Callable[[Any], bool]] = {
        "EQ": lambda v: v == value,
        "NEQ": lambda v: v != value,
        "GT": lambda v: v > value,
        "GTE": lambda v: v >= value,
        "LT": lambda v: v < value,
        "LTE": lambda v: v <= value,
        "BETWEEN": lambda v: value <= v <= high,
        "CONTAINS_TOKEN": lambda v: str(value).strip("*") in str(v),
    }
    if op not in tests:
        raise ValueError(f"operator {op} is not supported")
    test = tests[op]

    def check(c: HsCompany) -> bool:
        v = _record_value(c, prop)
        if v is None:
            return op == "NEQ"
        try:
            return test(v)
        except TypeError:
            return False

    return check


def _scrambled(object_id: str) -> int:
    return (int(object_id) * 2654435761) % 4294967291


def _sort(records: list[HsCompany], sorts: Any, shuffle_ties: bool = False) -> list[HsCompany]:
    """Records arrive sorted by (hs_lastmodifieddate, id).  No sorts = by id.  One sort rule only, as HubSpot
    ("Only one sorting rule can be applied to any search"); ``shuffle_ties`` scrambles the order among
    records sharing the sorted value, which HubSpot leaves undefined."""
    if not sorts:
        return sorted(records, key=lambda c: int(c.id))
    first = sorts[0]
    if isinstance(first, str):
        prop, descending = first.lstrip("-"), first.startswith("-")
    elif isinstance(first, dict):
        prop, descending = (
            str(first.get("propertyName")),
            str(first.get("direction", "ASCENDING")).upper() == "DESCENDING",
        )
    else:
        raise ValueError("sorts must be property names or {propertyName, direction}")
    if len(sorts) > 1:
        raise ValueError("only one sort rule can be applied to a search")
    if prop == "hs_object_id":
        records = sorted(records, key=lambda c: int(c.id))
    elif prop != "hs_lastmodifieddate":
        records = sorted(records, key=lambda c: (str(_record_value(c, prop) or ""), int(c.id)))
    elif shuffle_ties:
        records = sorted(records, key=lambda c: (c.updated, _scrambled(c.id)))
    return records[::-1] if descending else records


def search(state: SimState, req: Request) -> Response:
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, f"Invalid input JSON: {exc}", "VALIDATION_ERROR")
    if not isinstance(body, dict):
        return error(400, "Invalid input JSON: expected an object", "VALIDATION_ERROR")
    limit, after = body.get("limit", 10), body.get("after", "0")
    try:
        limit, offset = int(limit), int(after or 0)
    except (TypeError, ValueError):
        return error(
            400,
            "There was a problem with the request.",
            "VALIDATION_ERROR",
            errors=[{"message": "limit and after must be integers"}],
        )
    if limit > SEARCH_LIMIT or limit < 1:
        return error(
            400,
            f"There was a problem with the request. limit must be between 1 and {SEARCH_LIMIT}",
            "VALIDATION_ERROR",
        )
    if offset >= state.hubspot_search_cap or offset < 0:
        return error(
            400,
            f"There was a problem with the request. The search API can return at most "
            f"{state.hubspot_search_cap} results for one query; narrow the filter instead of paging.",
            "VALIDATION_ERROR",
            errors=[{"message": "after must be less than the result limit", "code": "INVALID_PAGING_OFFSET"}],
        )
    groups = body.get("filterGroups") or []
    try:
        if (
            len(groups) > MAX_GROUPS
            or any(len(g.get("filters", [])) > MAX_FILTERS_PER_GROUP for g in groups)
            or sum(len(g.get("filters", [])) for g in groups) > MAX_FILTERS
        ):
            raise ValueError(
                f"at most {MAX_GROUPS} filterGroups with {MAX_FILTERS_PER_GROUP} filters each "
                f"({MAX_FILTERS} in total)"
            )
        predicates = [[_predicate(f) for f in g.get("filters", [])] for g in groups]
        records = state.company.view(state.company.hs_companies).records
        if predicates:
            records = [c for c in records if any(all(p(c) for p in group) for group in predicates)]
        records = _sort(records, body.get("sorts"), state.hubspot_shuffle_ties)
    except (ValueError, AttributeError, TypeError) as exc:
        return error(400, f"There was a problem with the request. {exc}", "VALIDATION_ERROR")
    properties = body.get("properties") or None
    page = records[offset : offset + limit]
    if req.duplicate_page and offset > 0 and offset <= len(records):
        page = [records[offset - 1], *page]
    payload: dict[str, Any] = {
        "total": len(records),
        "results": [render_company(c, properties) for c in page],
    }
    if offset + limit < len(records):
        payload["paging"] = {"next": {"after": str(offset + limit)}}
    return json_response(200, payload)


# ---- lists ------------------------------------------------------------------------------------------


def _page_by_id(items: list[Any], req: Request, cap: int, default: int) -> tuple[list[Any], str | None]:
    """Cursor paging where ``after`` is the id of the first record of the next page (ids ascend)."""
    limit = min(int(req.q("limit") or default), cap)
    after = int(req.q("after") or 0)
    start = next((i for i, item in enumerate(items) if int(item.id) >= after), len(items))
    page = items[start : start + limit]
    following = items[start + limit] if start + limit < len(items) else None
    if req.duplicate_page and start > 0:
        page = [items[start - 1], *page]
    return page, (following.id if following is not None else None)


def _paging(req: Request, path: str, next_after: str | None) -> dict[str, Any]:
    if next_after is None:
        return {}
    query = "&".join(p for p in req.raw_query.split("&") if p and not p.startswith("after="))
    link = f"{req.base_url}{path}?{query + '&' if query else ''}after={next_after}"
    return {"paging": {"next": {"after": next_after, "link": link}}}


def list_companies(state: SimState, req: Request) -> Response:
    if req.q("archived") == "true":
        return json_response(200, {"results": []})
    try:
        items = sorted(state.company.hs_companies.values(), key=lambda c: int(c.id))
        page, next_after = _page_by_id(items, req, LIST_LIMIT, 10)
    except ValueError:
        return error(400, "limit and after must be integers", "VALIDATION_ERROR")
    props = _csv(req, "properties")
    return json_response(
        200,
        {
            "results": [render_company(c, props) for c in page],
            **_paging(req, "/crm/v3/objects/companies", next_after),
        },
    )


def list_owners(state: SimState, req: Request) -> Response:
    try:
        if int(req.q("limit") or 100) > OWNERS_LIMIT:
            return error(400, f"limit must be at most {OWNERS_LIMIT}", "VALIDATION_ERROR")
        items = sorted(state.company.owners.values(), key=lambda o: int(o.id))
        if email := req.q("email"):
            items = [o for o in items if o.email == email.lower()]
        page, next_after = _page_by_id(items, req, OWNERS_LIMIT, 100)
    except ValueError:
        return error(400, "limit and after must be integers", "VALIDATION_ERROR")
    return json_response(
        200, {"results": [render_owner(o) for o in page], **_paging(req, "/crm/v3/owners", next_after)}
    )


# ---- write-back -------------------------------------------------------------------------------------


def search_notes(state: SimState, req: Request) -> Response:
    """Notes whose body holds every CONTAINS_TOKEN word of one filter group (what write-backs ask)."""
    try:
        filters = [f for group in req.json().get("filterGroups") or [] for f in group.get("filters") or []]
        words = [str(f["value"]).lower() for f in filters if f.get("propertyName") == "hs_note_body"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return error(400, f"Invalid search: {exc!s}", "VALIDATION_ERROR")
    hits = [
        n
        for n in state.notes
        if n["system"] == "hubspot" and all(w in n["body"].lower().split() for w in words)
    ]
    results = [
        {
            "id": n["id"],
            "properties": {"hs_note_body": n["body"], "hs_object_id": n["id"]},
            "createdAt": n["received_at"],
            "updatedAt": n["received_at"],
            "archived": False,
        }
        for n in hits[:1]
    ]
    return json_response(200, {"total": len(hits), "results": results})


def create_note(state: SimState, req: Request) -> Response:
    try:
        body = req.json()
        props = body["properties"]
        text, stamp = props["hs_note_body"], props["hs_timestamp"]
        targets = []
        for assoc in body.get("associations") or []:
            types = assoc["types"]
            if not any(
                t.get("associationCategory") == "HUBSPOT_DEFINED"
                and int(t.get("associationTypeId")) == NOTE_TO_COMPANY
                for t in types
            ):
                raise ValueError("only note-to-company associations (HUBSPOT_DEFINED, 190) are supported")
            targets.append(str(assoc["to"]["id"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error(400, f"Property values were not valid: {exc!s}", "VALIDATION_ERROR")
    missing = [t for t in targets if t not in state.company.hs_companies]
    if missing:
        return error(
            400,
            f"One or more associations are invalid: company {missing[0]} does not exist",
            "VALIDATION_ERROR",
        )
    note_id = str(60_000_000_000 + state.next_id())
    created = hubspot_time(now_ms())
    for target in targets or [""]:
        # HubSpot documents no idempotency key for notes: a header of that name is ignored, not remembered.
        state.record_note("hubspot", target, text, None, id=note_id, hs_timestamp=stamp)
    properties = {
        "hs_note_body": text,
        "hs_timestamp": stamp,
        "hs_createdate": created,
        "hs_lastmodifieddate": created,
        "hs_object_id": note_id,
    }
    return json_response(
        201,
        {
            "id": note_id,
            "properties": properties,
            "createdAt": created,
            "updatedAt": created,
            "archived": False,
        },
    )
