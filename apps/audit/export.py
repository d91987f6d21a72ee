"""Exporting a stretch of the audit chain as JSON Lines, and checking such a file on its own.

One entry per line, in id order::

    {"id": 7, "created_at": "2026-11-23T22:10:00.000118+00:00", "actor": "system:rules",
     "action": "decision.matched", "object_type": "decision", "object_id": "42", "data": {...},
     "prev_hash": "…", "hash": "…"}

``created_at`` is written exactly as it was hashed, so each line's hash can be recomputed from the
line alone, and each ``prev_hash`` must equal the hash on the line before it. The first line's
``prev_hash`` links the segment to the entry before the exported period.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from .models import AuditEntry, canonical_json
from .services import ChainReport

FIELDS = ("id", "created_at", "actor", "action", "object_type", "object_id", "data", "prev_hash", "hash")


@dataclass(frozen=True)
class Period:
    """``since`` ≤ created_at, and created_at < ``until`` (or ≤ when ``until_inclusive``)."""

    since: dt.datetime
    until: dt.datetime | None = None
    until_inclusive: bool = False


def parse_moment(text: str, *, end: bool = False) -> tuple[dt.datetime, bool]:
    """A date or datetime from the command line, in TIME_ZONE unless it carries an offset.

    Returns the moment and whether it is inclusive as an upper bound: a bare date as ``end`` means
    "through the end of that day" (exclusive next midnight); a datetime is taken as given (inclusive).
    """
    text = text.strip()
    day = parse_date(text)  # first: parse_datetime would read a bare date as midnight
    if day is not None:
        if end:
            day += dt.timedelta(days=1)
        return timezone.make_aware(dt.datetime.combine(day, dt.time.min)), False
    moment = parse_datetime(text)
    if moment is None:
        raise ValueError(f"not a date (YYYY-MM-DD) or datetime (YYYY-MM-DDTHH:MM[:SS][+HH:MM]): {text!r}")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment, True


def period(since: str, until: str | None = None) -> Period:
    start, _ = parse_moment(since)
    if until is None:
        return Period(start)
    stop, inclusive = parse_moment(until, end=True)
    if stop < start or (stop == start and not inclusive):
        raise ValueError("--until is before --since")
    return Period(start, stop, inclusive)


def export_rows(window: Period, *, chunk_size: int = 2000) -> Iterator[dict[str, Any]]:
    """The entries created in ``window``, in id order, streamed from a server-side cursor."""
    entries = AuditEntry.objects.filter(created_at__gte=window.since)
    if window.until is not None:
        lookup = "created_at__lte" if window.until_inclusive else "created_at__lt"
        entries = entries.filter(**{lookup: window.until})
    for row in entries.order_by("id").values_list(*FIELDS).iterator(chunk_size=chunk_size):
        line = dict(zip(FIELDS, row, strict=True))
        line["created_at"] = line["created_at"].isoformat()
        yield line


@dataclass(frozen=True)
class ExportSummary:
    count: int
    first_id: int | None
    last_id: int | None


class Writer(Protocol):
    def write(self, text: str, /) -> object: ...


def write_jsonl(rows: Iterable[dict[str, Any]], handle: Writer) -> ExportSummary:
    count, first_id, last_id = 0, None, None
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
        first_id = row["id"] if first_id is None else first_id
        last_id = row["id"]
    return ExportSummary(count, first_id, last_id)


def entry_hash(line: dict[str, Any]) -> str:
    """The hash of one exported entry, recomputed from the line (as ``AuditEntry.compute_hash``)."""
    content = {k: line[k] for k in ("created_at", "actor", "action", "object_type", "object_id", "data")}
    return hashlib.sha256((line["prev_hash"] + canonical_json(content)).encode()).hexdigest()


def verify_jsonl(lines: Iterable[str]) -> ChainReport:
    """Check an exported segment from the file alone: every hash, and every link to the line before.

    ``broken_id`` names the first bad entry (or, for an unreadable line, its line number in ``reason``).
    """
    prev: str | None = None
    last_id = 0
    checked = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            pk, digest = line["id"], line["hash"]
            computed = entry_hash(line)
        except (ValueError, KeyError, TypeError) as exc:
            return ChainReport(False, checked, None, f"line {number} is not an exported entry ({exc})")
        if prev is not None and line["prev_hash"] != prev:
            return ChainReport(False, checked, pk, "previous hash does not match the line before it")
        if pk <= last_id:
            return ChainReport(False, checked, pk, "entries are not in id order")
        if computed != digest:
            return ChainReport(False, checked, pk, "content does not match its hash")
        prev, last_id = digest, pk
        checked += 1
    return ChainReport(True, checked)
