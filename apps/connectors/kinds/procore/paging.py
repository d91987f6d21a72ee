"""Reading one Procore list window completely, when the list documents no order.

Procore's list actions page with ``page``/``per_page`` and answer ``Link`` (``rel="next"`` until the last
page), ``Total`` and ``Per-Page`` (https://developers.procore.com/documentation/pagination, repo
``plan_your_app/pagination.md``). ``filters[updated_at]`` takes a range ``<start>...<end>``
(``tutorials/filtering_on_list_actions.md``); ``sort`` is documented for a few lists only and never with
``updated_at``, so nothing here assumes an order. A window ``[since, until]`` with ``until`` fixed at the
run's start is read to its last page; only then may a cursor move to ``until``.

Paging by number over a live list skips a record when another one leaves the list meanwhile (everything
after it shifts up a place). Records never enter a window whose end is in the past, but they leave it
when edited (their ``updated_at`` moves past ``until``) or deleted, and then ``Total`` drops. So a pass
whose pages did not all report the same ``Total`` is read again; the upsert dedupes what is read twice,
and what left the window is read by the next run (its new ``updated_at`` is past ``until``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from apps.connectors.http import HttpClient, UpstreamPermanent, UpstreamTransient
from apps.connectors.kinds.base import Record

# Pages per request: the documentation recommends at most 2,000 (pagination.md); per endpoint limits are not
# published, so we stay at the 1,000 every list we use has answered in examples and SDK defaults.
PER_PAGE = 1000
MAX_PASSES = 3  # reads of one window before giving up on a list that keeps changing under us
# filters[updated_at] wants both ends of the range; a full read starts here.
BEGINNING = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def iso(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S}Z"


def window(since: dt.datetime | None, until: dt.datetime) -> str:
    """``filters[updated_at]``: ``since`` (or the beginning) to ``until``, both ends inclusive."""
    return f"{iso(since or BEGINNING)}...{iso(until)}"


def has_next(link_header: str | None) -> bool:
    return any('rel="next"' in part for part in (link_header or "").split(","))


def total(headers: Mapping[str, str]) -> int | None:
    value = str(headers.get("Total") or "").strip()
    return int(value) if value.isdigit() else None


def read_all(
    client: HttpClient, path: str, params: Mapping[str, Any], per_page: int
) -> Iterator[list[Record]]:
    """Every page of one list query, as many passes as it takes to see the same ``Total`` on every page.

    Yields the pages as they arrive (a repeated pass yields its pages again). Raises
    ``UpstreamTransient`` when ``MAX_PASSES`` passes all saw the list change: the run ends partial and its
    cursor stays where the window began.
    """
    for _ in range(MAX_PASSES):
        totals: set[int | None] = set()
        page = 1
        while True:
            data, response = client.request_json(
                "GET", path, params={**params, "page": page, "per_page": per_page}
            )
            if not isinstance(data, list):
                raise UpstreamPermanent(
                    f"GET {path}: answered {type(data).__name__}, expected a list", status=200
                )
            totals.add(total(response.headers))
            yield data
            if not data or not has_next(response.headers.get("Link")):
                break
            page += 1
        if page == 1 or len(totals) == 1:
            return
    raise UpstreamTransient(
        f"GET {path}: the list changed during each of {MAX_PASSES} reads (Total differed between pages)"
    )
