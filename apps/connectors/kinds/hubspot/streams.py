"""HubSpot's pagers and record shapes (CRM v3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from django.utils import timezone

from apps.connectors.http import HttpClient
from apps.connectors.kinds.base import (
    BadRecord,
    ConfigurationError,
    ConnectorKind,
    Cursor,
    Page,
    PagingStalled,
    Record,
    Stream,
    cursor_key,
    cursor_start,
    domain_of,
    make_cursor,
    parse_date,
    parse_datetime,
)
from apps.entities.models import Client, CrmOwner

SEARCH_PATH = "/crm/v3/objects/companies/search"
# CRM search (https://developers.hubspot.com/docs/guides/api/crm/search, "Limitations"): at most 200 objects
# per page and 10,000 results per query; one sort rule per request. The pager below never pages a query (it
# sends no ``after``): every request is the first page of a narrower query, so the 10,000 cap never binds.
SEARCH_PAGE = 200
SEARCH_CAP = 10_000
# "The search endpoints are rate limited to four requests per second per authentication token", apart from
# the account's ten-second burst limit: the search operations carry ``x-hubspot-rate-limit-exemptions:
# [ten-secondly]`` in HubSpot's OpenAPI (PublicApiSpecs/CRM/Companies/Rollouts/424/v3/companies.json) and
# https://developers.hubspot.com/changelog/crm-search-api-rate-limit-increase states the per-second figure.
SEARCH_RATE_DEFAULT = (4, 1.0)
OWNERS_PAGE = 500
NOTE_TO_COMPANY = 190  # HubSpot-defined association type: note to company
# Read on every company; the renewal date's property is the connection's field mapping (``renewal_date``).
BASE_PROPERTIES = ("name", "domain", "hubspot_owner_id", "hs_lastmodifieddate")
RENEWAL_DEFAULT = "contract_renewal_date"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _ms(moment: dt.datetime) -> str:
    # Integer arithmetic: float timestamps can land a millisecond low, and EQ filters must be exact.
    return str((moment - _EPOCH) // dt.timedelta(milliseconds=1))


def _modified(record: Record) -> dt.datetime:
    props = record.get("properties") or {}
    return parse_datetime(props.get("hs_lastmodifieddate") or record.get("updatedAt"))


def _object_id(record: Record) -> int:
    try:
        return int(record["id"])
    except (KeyError, TypeError, ValueError):
        raise BadRecord(f"company id is not a number: {record.get('id')!r}") from None


def _filter(prop: str, operator: str, value: str) -> dict[str, str]:
    return {"propertyName": prop, "operator": operator, "value": value}


def company_properties(kind: ConnectorKind) -> list[str]:
    """The properties every company read asks for, the mapped renewal-date property among them."""
    return [*BASE_PROPERTIES, kind.mapped("renewal_date")]


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
    """Companies changed since the cursor, through CRM search, as a keyset walk over
    (``hs_lastmodifieddate``, ``hs_object_id``).

    Each request is the first page of a query that starts where the last page ended:

    * ``hs_lastmodifieddate >= T`` sorted by it. A page spanning several times moves ``T`` to its last time
      (the records sharing it are read again; the upsert dedupes them).
    * A page that is one time ``T`` throughout: a tie of 200 or more. HubSpot sorts by one property only and
      documents no order within equal values, so the tie is walked from its start by id:
      ``hs_lastmodifieddate = T and hs_object_id > last id`` sorted by id, until that query says no more.
    * Then on strictly after the tie: ``hs_lastmodifieddate > T``. The walk ends only when a time query
      says no more, whatever the tie's size (an exact multiple of the page included).

    A page that says "more" without moving the walk forward raises :class:`PagingStalled`.
    """

    name = "companies"
    model = Client
    entity = "client"

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        started = timezone.now()
        cap = started - self.kind.settle()
        properties = company_properties(self.kind)
        wait = search_budget(self.kind)
        window_end = _filter("hs_lastmodifieddate", "LT", _ms(started))  # edits during the run: next run

        def search(filters: list[dict[str, str]], sort: str) -> tuple[list[Record], bool]:
            if wait is not None:
                client.stats.rate_limited_seconds += wait()
            body = {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
                "properties": properties,
                "limit": SEARCH_PAGE,
                "after": "0",  # always a query's first page (the 10,000-result cap never binds)
            }
            data = client.post_json(SEARCH_PATH, body)
            results = list(data.get("results") or [])
            total = data.get("total")
            more = bool(((data.get("paging") or {}).get("next") or {}).get("after")) or (
                isinstance(total, int) and total > len(results)
            )
            return results, more

        since = cursor_start(cursor, full)
        strictly_after = False  # True right after a tie at ``since`` was walked to its end
        while True:
            lower = []
            if since is not None:
                lower = [_filter("hs_lastmodifieddate", "GT" if strictly_after else "GTE", _ms(since))]
            records, more = search([*lower, window_end], "hs_lastmodifieddate")
            cursor = self._advance(cursor, records, cap)
            yield Page(records, cursor)
            if not more:
                return
            if not records:
                raise PagingStalled(f"POST {SEARCH_PATH}: an empty page that says more records follow")
            first, last = _modified(records[0]), _modified(records[-1])
            if since is not None and (last < since or (last == since and (strictly_after or first != last))):
                raise PagingStalled(
                    f"POST {SEARCH_PATH}: a page ending at {last.isoformat()} does not move past "
                    f"{since.isoformat()}"
                )
            if first != last:
                since, strictly_after = last, False
                continue
            for page in self._walk_tie(search, last, cursor, cap):
                cursor = page.cursor
                yield page
            since, strictly_after = last, True

    def _walk_tie(
        self,
        search: Callable[[list[dict[str, str]], str], tuple[list[Record], bool]],
        moment: dt.datetime,
        cursor: Cursor,
        cap: dt.datetime,
    ) -> Iterator[Page]:
        """Every company modified at exactly ``moment``, by id from the first (the time-sorted page that
        found the tie came in no documented order, so it says nothing about which ids were read)."""
        after = 0
        while True:
            tied = [
                _filter("hs_lastmodifieddate", "EQ", _ms(moment)),
                _filter("hs_object_id", "GT", str(after)),
            ]
            records, more = search(tied, "hs_object_id")
            cursor = self._advance(cursor, records, cap)
            yield Page(records, cursor)
            if not more:
                return
            highest = max((_object_id(r) for r in records), default=after)
            if highest <= after:
                raise PagingStalled(
                    f"POST {SEARCH_PATH}: the companies modified at {moment.isoformat()} stop at id {after} "
                    "while the search says more follow"
                )
            after = highest

    @staticmethod
    def _advance(cursor: Cursor, records: list[Record], cap: dt.datetime) -> Cursor:
        """The cursor after a page: its newest (time, id) record, never past the settle cap."""
        if not records:
            return cursor
        newest = max(records, key=lambda r: (_modified(r), _object_id(r)))
        moment = _modified(newest)
        reached = make_cursor(cap, "") if moment > cap else make_cursor(moment, newest["id"])
        return max(cursor, reached, key=cursor_key)

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
            "renewal_date": parse_date(props.get(self.kind.mapped("renewal_date"))),
        }


def search_budget(kind: ConnectorKind) -> Callable[[], float] | None:
    """CRM search's own per-second limit, shared by every worker calling this account, waited on before each
    search on top of the account's general budget (which every call waits on). ``options.search_rate_budget``
    ({calls, seconds}) overrides the documented default; false turns it off."""
    from apps.connectors.ratelimit import RateBudget

    configured = (kind.connection.options or {}).get("search_rate_budget", SEARCH_RATE_DEFAULT)
    if not configured:
        return None
    try:
        if isinstance(configured, dict):
            calls, seconds = int(configured["calls"]), float(configured["seconds"])
        else:
            calls, seconds = int(configured[0]), float(configured[1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise ConfigurationError(
            f"connection {kind.connection.slug!r}: options.search_rate_budget needs calls and seconds"
        ) from None
    return RateBudget(f"{kind.kind}-search:{kind.tenant()}", calls, seconds)
