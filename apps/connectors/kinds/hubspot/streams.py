"""HubSpot's pagers and record shapes (CRM v3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from django.utils import timezone

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
)
from apps.entities.models import Client, CrmOwner

SEARCH_PATH = "/crm/v3/objects/companies/search"
SEARCH_PAGE = 200  # the search endpoint's largest `limit`
# One search query never pages past 10,000 results: we never page by offset (see keyset_pages), and a
# timestamp shared by a whole page is walked by id instead, so no query gets near it.
SEARCH_CAP = 10_000
OWNERS_PAGE = 500
NOTE_TO_COMPANY = 190  # HubSpot-defined association type: note to company
COMPANY_PROPERTIES = ["name", "domain", "hubspot_owner_id", "contract_renewal_date", "hs_lastmodifieddate"]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _ms(moment: dt.datetime) -> str:
    # Integer arithmetic: float timestamps can land a millisecond low, and EQ filters must be exact.
    return str((moment - _EPOCH) // dt.timedelta(milliseconds=1))


def _modified(record: Record) -> dt.datetime:
    props = record.get("properties") or {}
    return parse_datetime(props.get("hs_lastmodifieddate") or record.get("updatedAt"))


def _filter(prop: str, operator: str, value: str) -> dict[str, str]:
    return {"propertyName": prop, "operator": operator, "value": value}


class Owners(Stream):
    name = "owners"
    model = CrmOwner
    entity = "crm_owner"

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        # The owners API has no modified-since filter and a company has few owners: read them all each time;
        # the content hash makes unchanged ones free.
        after = None
        while True:
            params: dict[str, Any] = {"limit": OWNERS_PAGE, "archived": "false"}
            if after:
                params["after"] = after
            data = client.get_json("/crm/v3/owners", params=params)
            after = ((data.get("paging") or {}).get("next") or {}).get("after")
            yield Page(list(data.get("results") or []), cursor)
            if not after:
                return

    def normalise(self, raw: Record) -> Record:
        if not raw.get("id"):
            raise BadRecord("owner without id")
        name = " ".join(p for p in (raw.get("firstName"), raw.get("lastName")) if p).strip()
        return {
            "external_id": str(raw["id"]),
            "source_updated_at": parse_datetime(raw.get("updatedAt")),
            "email": str(raw.get("email") or "").strip().lower(),
            "name": name,
        }


class Companies(Stream):
    name = "companies"
    model = Client
    entity = "client"

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        started = timezone.now()
        window_end = _filter(
            "hs_lastmodifieddate", "LT", _ms(started)
        )  # edits during the run are the next run's
        previous: list[Record] = []

        def search(filters: list[dict[str, str]], sort: str, limit: int) -> tuple[list[Record], bool]:
            body = {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
                "properties": COMPANY_PROPERTIES,
                "limit": limit,
            }
            data = client.post_json(SEARCH_PATH, body)
            return list(data.get("results") or []), bool(
                ((data.get("paging") or {}).get("next") or {}).get("after")
            )

        def fetch(since: dt.datetime | None, offset: int) -> tuple[list[Record], bool]:
            if offset == 0:
                lower = [_filter("hs_lastmodifieddate", "GTE", _ms(since))] if since else []
                records, more = search([*lower, window_end], "hs_lastmodifieddate", SEARCH_PAGE)
            else:
                assert since is not None
                # A whole page shared one timestamp: walk the rest of it by id (an offset could reach the
                # 10,000-result cap), then continue after it.
                after_id = max(int(r["id"]) for r in previous if _modified(r) == since)
                tied = [
                    _filter("hs_lastmodifieddate", "EQ", _ms(since)),
                    _filter("hs_object_id", "GT", str(after_id)),
                ]
                records, more = search(tied, "hs_object_id", SEARCH_PAGE)
                if not more and len(records) < SEARCH_PAGE:
                    later = [_filter("hs_lastmodifieddate", "GT", _ms(since)), window_end]
                    rest, more = search(later, "hs_lastmodifieddate", SEARCH_PAGE - len(records))
                    records += rest
            previous[:] = records
            return records, more

        yield from keyset_pages(
            fetch,
            updated_at=_modified,
            record_id=lambda r: r["id"],
            since=cursor_start(cursor, full),
            page_size=SEARCH_PAGE,
            cursor=cursor,
            cursor_cap=started - self.kind.settle(),
        )

    def normalise(self, raw: Record) -> Record:
        props = raw.get("properties") or {}
        name = str(props.get("name") or "").strip()
        if not raw.get("id"):
            raise BadRecord("company without id")
        if not name:
            raise BadRecord("company without a name")
        return {
            "external_id": str(raw["id"]),
            "source_updated_at": _modified(raw),
            "name": name,
            "domain": domain_of(props.get("domain")),
            "owner_ref": str(props.get("hubspot_owner_id") or ""),
            "renewal_date": parse_date(props.get("contract_renewal_date")),
        }
