"""``keyset_pages`` (the offset-within-a-tie pager QuickBooks, Procore and ``rest`` share) over ties of any
size, an exact multiple of the page included, and its refusal to loop on an upstream that does not move."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.connectors.kinds.base import PagingStalled, Record, keyset_pages

BASE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def upstream(blocks: list[tuple[int, int]], seed: int) -> list[Record]:
    """Records in blocks of (count, seconds after BASE) sharing one time each, ids shuffled."""
    total = sum(count for count, _ in blocks)
    ids = random.Random(seed).sample(range(1, 10 * total + 10), total)
    it = iter(ids)
    return [
        {"id": next(it), "at": BASE + dt.timedelta(seconds=offset)}
        for count, offset in blocks
        for _ in range(count)
    ]


class Vendor:
    """``updated >= since`` ordered by (updated, id), ``offset``/``size`` paging, "more" when rows remain."""

    def __init__(self, records: list[Record], size: int) -> None:
        self.records = sorted(records, key=lambda r: (r["at"], r["id"]))
        self.size = size
        self.calls = 0

    def __call__(self, since: dt.datetime | None, offset: int) -> tuple[list[Record], bool]:
        self.calls += 1
        rows = [r for r in self.records if since is None or r["at"] >= since]
        return rows[offset : offset + self.size], offset + self.size < len(rows)


def walk(vendor: Any, size: int, since: dt.datetime | None = None) -> list[Any]:
    return list(
        keyset_pages(
            vendor,
            updated_at=lambda r: r["at"],
            record_id=lambda r: r["id"],
            since=since,
            page_size=size,
            cursor={},
        )
    )


@settings(max_examples=80, deadline=None)
@given(
    size=st.sampled_from([1, 2, 3, 5, 7, 199, 200, 201, 400]),
    multiple=st.integers(min_value=0, max_value=4),
    extra=st.sampled_from([-1, 0, 0, 1]),
    before=st.integers(min_value=0, max_value=10),
    after=st.integers(min_value=0, max_value=10),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_every_record_is_read_whatever_the_tie_and_page_size(
    size: int, multiple: int, extra: int, before: int, after: int, seed: int
) -> None:
    tie = max(0, multiple * size + extra)
    records = upstream([(1, 1)] * before + [(tie, 100)] + [(1, 200 + i) for i in range(after)], seed)
    vendor = Vendor(records, size)
    pages = walk(vendor, size)
    assert {r["id"] for p in pages for r in p.records} == {r["id"] for r in records}
    assert vendor.calls <= 2 * (len(records) // size) + before + after + 3
    if records:
        newest = max(records, key=lambda r: (r["at"], r["id"]))
        assert pages[-1].cursor["updated_at"] == newest["at"].isoformat()


def test_an_upstream_ignoring_the_time_filter_is_an_error_not_an_endless_loop() -> None:
    records = upstream([(1, 1), (1, 2), (1, 3)], seed=1)

    def ignores_since(since: dt.datetime | None, offset: int) -> tuple[list[Record], bool]:
        return sorted(records, key=lambda r: r["at"])[:2], True  # always the oldest two, always "more"

    with pytest.raises(PagingStalled, match="does not move"):
        walk(ignores_since, 2, since=BASE)


def test_an_upstream_answering_the_same_page_to_every_offset_is_an_error() -> None:
    records = upstream([(5, 1)], seed=2)

    def ignores_offset(since: dt.datetime | None, offset: int) -> tuple[list[Record], bool]:
        return records[:2], True  # one timestamp, always the same two, always "more"

    with pytest.raises(PagingStalled, match="does not move"):
        walk(ignores_offset, 2, since=BASE)


def test_a_tie_just_below_a_fractional_cursor_is_walked_not_refused() -> None:
    """QuickBooks rounds ``since`` down to whole seconds: a full page of one second just below ``since`` is
    a tie to walk by offset (the cursor cap carries fractions), not an upstream going backwards."""
    records = upstream([(7, 10), (2, 11)], seed=3)
    since = BASE + dt.timedelta(seconds=10, milliseconds=400)

    def rounds_down(since: dt.datetime | None, offset: int) -> tuple[list[Record], bool]:
        floor = since.replace(microsecond=0) if since else None
        return Vendor(records, 3)(floor, offset)

    pages = walk(rounds_down, 3, since=since)
    assert {r["id"] for p in pages for r in p.records} == {r["id"] for r in records}
