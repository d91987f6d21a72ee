"""Schema drift: which field paths upstream records carry, and how a page differs from what a stream knows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# A known field absent from every record of a smaller page may just be optional (QuickBooks omits empty
# fields): only pages at least this large can report a field as missing.
MIN_RECORDS_FOR_MISSING = 20
MAX_DEPTH = 4


def _paths(value: dict[str, Any], prefix: str, depth: int, out: set[str]) -> None:
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict) and item and depth < MAX_DEPTH:
            _paths(item, f"{path}.", depth + 1, out)
        else:
            out.add(path)


def field_paths(records: Iterable[Any]) -> set[str]:
    """Every dotted path to a leaf in any of the records (lists are leaves; nested objects are followed)."""
    out: set[str] = set()
    shapes: set[tuple[Any, ...]] = set()
    for record in records:
        if type(record) is not dict:
            continue
        # Most records of a page share one shape (their keys and their nested objects' keys): walk each
        # shape once. Building the shape is C-level tuple work, a few microseconds a record; deeper
        # levels than the first are compared only for the records whose shape is new.
        shape = (tuple(record), *(tuple(v) for v in record.values() if type(v) is dict))
        if shape in shapes:
            continue
        shapes.add(shape)
        _paths(record, "", 0, out)
    return out


@dataclass(frozen=True)
class Drift:
    new: list[str]
    missing: list[str]
    known: list[str]  # the stream's field list after this page
    still_missing: list[str]  # reported missing and not seen since


def compare(known: list[str], missing: list[str], page_fields: set[str], records: int) -> Drift:
    """What a page changes: new fields (beyond ``known``), and known fields no record of a large page has."""
    known_set, missing_set = set(known), set(missing)
    new = sorted(page_fields - known_set)
    gone: list[str] = []
    if records >= MIN_RECORDS_FOR_MISSING:
        gone = sorted(known_set - page_fields - missing_set)
    still = sorted((missing_set | set(gone)) - page_fields)
    return Drift(new=new, missing=gone, known=sorted(known_set | page_fields), still_missing=still)
