"""Set-based upsert of one page of normalised records into an entity table.

One statement per page: ``INSERT ... SELECT FROM unnest(<one array per column>)
ON CONFLICT (source, external_id) DO UPDATE ... WHERE`` the content changed and the incoming version is not
older. Unchanged records are not written at all (freshness is per stream, in ``StreamState.last_success_at``),
and an older version arriving late (a slow page, a replayed webhook) never overwrites a newer one.
``bulk_create(update_conflicts=True)`` cannot express that WHERE guard, hence the SQL; every value is a bound
array parameter.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import connection, models

Row = dict[str, Any]
# Fields the loader sets itself or that are not part of an upstream record's content.
_BOOKKEEPING = {"source_updated_at", "content_hash", "synced_at", "deleted_at"}


@dataclass
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    changed_ids: list[int] = field(default_factory=list)
    rejected: list[tuple[Row, str]] = field(default_factory=list)  # (row, reason): quarantined by the caller


def _json_default(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date | Decimal):
        return str(value)
    raise TypeError(f"cannot hash {type(value).__name__}")


def content_hash(row: Mapping[str, Any]) -> str:
    """md5 of the canonical JSON of the record's content (not its upstream timestamp)."""
    content = {k: v for k, v in row.items() if k not in _BOOKKEEPING}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def source_column(model: type[models.Model]) -> str:
    """Entities point at their connection as ``source``; the crosswalk (SourceObject) as ``connection``."""
    names = {f.name for f in model._meta.concrete_fields}
    return "source_id" if "source" in names else "connection_id"


@dataclass(frozen=True)
class _Check:
    """What the database demands of one column, computed once per model (validation runs per record)."""

    null: bool
    text: bool
    max_length: int | None
    choices: frozenset[Any] | None
    limit: Decimal | None  # exclusive bound of abs(value) for a DecimalField
    aware: bool


@functools.cache
def _checks(model: type[models.Model]) -> dict[str, _Check]:
    checks = {}
    for name, f in _fields(model).items():
        decimal = isinstance(f, models.DecimalField)
        checks[name] = _Check(
            null=f.null,
            text=isinstance(f, models.CharField | models.TextField),
            max_length=getattr(f, "max_length", None),
            choices=frozenset(c[0] for c in f.flatchoices) if f.choices else None,
            limit=Decimal(10) ** (f.max_digits - f.decimal_places) if decimal else None,  # type: ignore[attr-defined]
            aware=isinstance(f, models.DateTimeField),
        )
    return checks


def validate_row(model: type[models.Model], row: Row) -> str | None:
    """Why the database would refuse this row, checked up front so one bad record cannot fail a page."""
    checks = _checks(model)
    for name, value in row.items():
        check = checks.get(name)
        if check is None:  # a programming error in the stream, not a bad record
            raise ValueError(f"{model.__name__} has no field {name!r}")
        if value is None:
            if not check.null:
                return f"missing {name}"
            continue
        if check.text:
            if not isinstance(value, str):
                return f"{name} is not text: {value!r}"
            if check.max_length and len(value) > check.max_length:
                return f"{name} is longer than {check.max_length} characters"
        if check.choices is not None and value not in check.choices:
            return f"{name} {value!r} is not one of {', '.join(sorted(map(str, check.choices)))}"
        if check.limit is not None and abs(value) >= check.limit:
            return f"{name} {value} is out of range"
        if check.aware and (not isinstance(value, dt.datetime) or value.tzinfo is None):
            return f"{name} is not an aware date-time"
    return None


def _newest_per_key(rows: Iterable[Row]) -> list[Row]:
    """The same record twice on a page (vendors do that) would make ON CONFLICT fail: keep the newest."""
    best: dict[str, Row] = {}
    for row in rows:
        key = row["external_id"]
        if key not in best or row["source_updated_at"] >= best[key]["source_updated_at"]:
            best[key] = row
    return list(best.values())


def _fields(model: type[models.Model]) -> dict[str, models.Field[Any, Any]]:
    return {f.name: f for f in model._meta.concrete_fields if isinstance(f, models.Field)}


def _column(f: models.Field[Any, Any]) -> str:
    return f.column or f.name


def _array_type(f: models.Field[Any, Any]) -> str:
    # Cast to the unbounded base type: an explicit varchar(n) cast would silently truncate.
    return re.sub(r"\(.*\)", "", f.db_type(connection) or "text") + "[]"


def upsert_rows(
    model: type[models.Model], *, source_id: int, rows: list[Row], now: dt.datetime
) -> UpsertResult:
    """Insert new records, update changed ones that are not older, leave the rest untouched."""
    result = UpsertResult()
    valid: list[Row] = []
    for row in rows:
        reason = validate_row(model, row)
        if reason:
            result.rejected.append((row, reason))
        else:
            valid.append(row)
    unique = _newest_per_key(valid)
    if not unique:
        return result
    meta = model._meta
    table = meta.db_table
    src = source_column(model)
    content_cols = sorted({k for row in unique for k in row})
    fields = _fields(model)
    # NOT NULL columns the upstream does not supply (e.g. match_method) get their default on insert only.
    insert_only = [
        f
        for f in fields.values()
        if not f.primary_key
        and not f.null
        and f.name not in content_cols
        and _column(f) not in (src, "content_hash", "synced_at")
        and f.get_default() is not None
    ]
    arrays: list[list[Any]] = []
    for name in content_cols:
        default = fields[name].get_default() if not fields[name].null else None
        arrays.append([row.get(name, default) for row in unique])
    arrays.append([content_hash(row) for row in unique])
    for f in insert_only:
        arrays.append([f.get_default()] * len(unique))

    cols = [_column(fields[n]) for n in content_cols] + ["content_hash"] + [_column(f) for f in insert_only]
    types = (
        [_array_type(fields[n]) for n in content_cols] + ["varchar[]"] + [_array_type(f) for f in insert_only]
    )
    quoted = [connection.ops.quote_name(c) for c in cols]
    updated = [c for c in [*(_column(fields[n]) for n in content_cols), "content_hash"] if c != "external_id"]
    assignments = ", ".join(f"{q} = EXCLUDED.{q}" for q in map(connection.ops.quote_name, updated))
    # A record back upstream is live again, unless entity resolution merged it into another: it stays a
    # tombstone pointing at its survivor (its content is still kept current).
    revive, tombstoned = "NULL", f"{table}.deleted_at IS NOT NULL"
    if "merged_into" in fields:
        revive = f"CASE WHEN {table}.merged_into_id IS NULL THEN NULL ELSE {table}.deleted_at END"
        tombstoned += f" AND {table}.merged_into_id IS NULL"
    sql = f"""
        INSERT INTO {table} ({src}, synced_at, {", ".join(quoted)})
        SELECT %s, %s, v.* FROM unnest({", ".join(f"%s::{t}" for t in types)}) AS v({", ".join(quoted)})
        ON CONFLICT ({src}, external_id) DO UPDATE SET
            {assignments}, synced_at = EXCLUDED.synced_at, deleted_at = {revive}
        WHERE ({table}.content_hash IS DISTINCT FROM EXCLUDED.content_hash OR ({tombstoned}))
          AND {table}.source_updated_at <= EXCLUDED.source_updated_at
        RETURNING {table}.id, ({table}.xmax = 0) AS inserted
    """  # noqa: S608 - identifiers come from model metadata; every value is a bound parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, [source_id, now, *arrays])
        returned = cursor.fetchall()
    result.changed_ids = [pk for pk, _ in returned]
    result.inserted = sum(1 for _, inserted in returned if inserted)
    result.updated = len(returned) - result.inserted
    result.unchanged = len(rows) - len(result.rejected) - len(returned)
    return result
