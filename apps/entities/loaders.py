"""Set-based upsert of one page of normalised records into an entity table.

One statement per page: ``INSERT ... SELECT FROM jsonb_to_recordset(<the page as one JSON document>)
ON CONFLICT (source, external_id) DO UPDATE ... WHERE`` the content changed and the incoming version is not
older. Unchanged records are not written at all (freshness is per stream, in ``StreamState.last_success_at``),
and an older version arriving late (a slow page, a replayed webhook) never overwrites a newer one.
``bulk_create(update_conflicts=True)`` cannot express that WHERE guard, hence the SQL. The page travels as one
bound jsonb parameter, each record the same canonical JSON its content hash is taken of: binding one array
per column instead made psycopg dump every value in Python, the largest single cost of a sync.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from django.db import connection, models

from .linking import INSERT_LINKS

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
    kind = type(value)  # exact types first: this runs for every date and amount of every record
    if kind is dt.datetime:
        return (value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)).isoformat()
    if kind is dt.date or kind is Decimal:
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date | Decimal):
        return str(value)
    raise TypeError(f"cannot hash {type(value).__name__}")


# One encoder for every record (json.dumps with options builds a new one per call).
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_json_default).encode


def content_hash(row: Mapping[str, Any]) -> str:
    """md5 of the canonical JSON of the record's content (not its upstream timestamp)."""
    content = {k: v for k, v in row.items() if k not in _BOOKKEEPING}
    return hashlib.md5(_canonical(content).encode(), usedforsecurity=False).hexdigest()


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
    blank: bool  # "" passes the choices: no value is not a bad value
    limit: Decimal | None  # exclusive bound of abs(value) for a DecimalField, after rounding to ``places``
    places: int
    safe: Decimal  # below this in absolute value, no rounding can reach ``limit``
    aware: bool
    kind: str  # what the column stores: "int", "float", "decimal", "bool", "date", "datetime" or "" (text)
    int_range: tuple[int, int] | None


def _kind(f: models.Field[Any, Any]) -> str:
    if isinstance(f, models.BooleanField):
        return "bool"
    if isinstance(f, models.DecimalField):
        return "decimal"
    if isinstance(f, models.FloatField):
        return "float"
    if isinstance(f, models.IntegerField | models.ForeignKey):
        return "int"
    if isinstance(f, models.DateTimeField):
        return "datetime"
    if isinstance(f, models.DateField):
        return "date"
    return ""


@functools.cache
def _checks(model: type[models.Model]) -> dict[str, _Check]:
    checks = {}
    for name, f in _fields(model).items():
        kind = _kind(f)
        decimal = kind == "decimal"
        limit = Decimal(10) ** (f.max_digits - f.decimal_places) if decimal else None  # type: ignore[attr-defined]
        int_range = None
        if kind == "int":
            target = f.target_field if isinstance(f, models.ForeignKey) else f
            low, high = connection.ops.integer_field_range(target.get_internal_type())
            int_range = (int(low), int(high)) if low is not None and high is not None else None
        checks[name] = _Check(
            null=f.null,
            text=isinstance(f, models.CharField | models.TextField),
            max_length=getattr(f, "max_length", None),
            choices=frozenset(c[0] for c in f.flatchoices) if f.choices else None,
            blank=f.blank,
            limit=limit,
            places=f.decimal_places if decimal else 0,  # type: ignore[attr-defined]
            safe=limit - 1 if limit is not None else Decimal(0),
            aware=kind == "datetime",
            kind=kind,
            int_range=int_range,
        )
    return checks


def _number_problem(name: str, value: Any, check: _Check) -> str | None:
    """Why a number cannot go into its column: wrong type, not finite, beyond the column's range."""
    kind = type(value)
    if kind is Decimal and check.limit is not None and value.is_finite() and -check.safe < value < check.safe:
        return None  # the common case, decided in three comparisons
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return f"{name} is not a number: {value!r}"
    if check.kind == "int":
        if not isinstance(value, int):
            return f"{name} is not a whole number: {value!r}"
        if check.int_range and not check.int_range[0] <= value <= check.int_range[1]:
            return f"{name} {value} is out of range"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} is not a finite number: {value!r}"
    if isinstance(value, Decimal) and not value.is_finite():
        return f"{name} is not a finite number: {value!r}"
    if check.limit is not None:
        amount = Decimal(value) if isinstance(value, int) else value
        if not isinstance(amount, Decimal):
            return f"{name} is not a decimal amount: {value!r}"
        # PostgreSQL rounds to the column's places first: 999999999999.995 overflows numeric(14, 2).
        if (
            amount.adjusted() >= check.limit.adjusted()
            or abs(amount.quantize(Decimal(1).scaleb(-check.places), rounding=ROUND_HALF_UP, context=_WIDE))
            >= check.limit
        ):
            return f"{name} {value} is out of range"
    return None


# Enough digits to round any amount below a column's limit (numeric columns hold at most 1000 digits).
_WIDE = Context(prec=1100)


def validate_row(model: type[models.Model], row: Row) -> str | None:
    """Why the database would refuse this row, checked up front so one bad record cannot fail a page.

    Each value must be of its column's type and within its range (text length, NUL characters, choices,
    whole numbers within the integer column, finite amounts within the decimal column's precision, aware
    date-times that exist in UTC): a value PostgreSQL would refuse fails the one record here, with its
    reason, instead of the page's single statement.
    """
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
            if "\x00" in value:
                return f"{name} contains a NUL character"
        if check.choices is not None and value not in check.choices and not (check.blank and value == ""):
            return f"{name} {value!r} is not one of {', '.join(sorted(map(str, check.choices)))}"
        kind = check.kind
        if not kind:
            continue
        # Each branch first accepts the common exact type in a comparison or two: this runs per value.
        if kind == "datetime":
            if type(value) is dt.datetime and value.tzinfo is dt.UTC:
                continue
            if not isinstance(value, dt.datetime) or value.tzinfo is None:
                return f"{name} is not an aware date-time"
            if not 1 < value.year < 9999:
                try:  # only an instant at the calendar's edge can lack a UTC equivalent
                    value.astimezone(dt.UTC)
                except OverflowError:
                    return f"{name} {value.isoformat()} is out of range"
        elif kind == "date":
            if not isinstance(value, dt.date):
                return f"{name} is not a date: {value!r}"
        elif kind == "bool":
            if type(value) is not bool:
                return f"{name} is not true or false: {value!r}"
        elif problem := _number_problem(name, value, check):
            return problem
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


def _base_type(f: models.Field[Any, Any]) -> str:
    # The unbounded base type: an explicit varchar(n) cast would silently truncate.
    return re.sub(r"\(.*\)", "", f.db_type(connection) or "text")


@dataclass(frozen=True)
class _Statement:
    sql: str
    # Parameters bound to a field's default (evaluated per page: a default may be a callable).
    defaults: tuple[tuple[str, models.Field[Any, Any]], ...]


@functools.cache
def _statement(model: type[models.Model], keys: tuple[str, ...]) -> _Statement:
    """The page upsert for one model and one set of record keys (a stream sends the same keys every page)."""
    meta = model._meta
    table = meta.db_table
    src = source_column(model)
    fields = _fields(model)
    quote = connection.ops.quote_name
    defaults: list[tuple[str, models.Field[Any, Any]]] = []

    def default_of(f: models.Field[Any, Any]) -> str:
        name = f"default_{len(defaults)}"
        defaults.append((name, f))
        return f"CAST(%({name})s AS {_base_type(f)})"

    # The page arrives as one jsonb array of objects keyed by field name, plus the content hash: PostgreSQL
    # parses it in C, where binding one array per column costs a Python dump of every value.
    record_type = ", ".join(
        [*(f"{quote(k)} {_base_type(fields[k])}" for k in keys), f"{quote('content_hash')} text"]
    )
    columns, values = [], []
    for k in keys:
        f = fields[k]
        columns.append(quote(_column(f)))
        value = f"v.{quote(k)}"
        # A key some records of the page leave out: a NOT NULL column gets its default, as a missing value
        # would (an explicit null there is refused by validate_row).
        if not f.null and f.get_default() is not None:
            value = f"COALESCE({value}, {default_of(f)})"
        values.append(value)
    columns.append("content_hash")
    values.append("v.content_hash")
    # NOT NULL columns the upstream does not supply (e.g. match_method) get their default on insert only.
    for f in fields.values():
        if (
            not f.primary_key
            and not f.null
            and f.name not in keys
            and _column(f) not in (src, "content_hash", "synced_at")
            and f.get_default() is not None
        ):
            columns.append(quote(_column(f)))
            values.append(default_of(f))
    for column, key, expression in INSERT_LINKS.get(meta.label, []):
        if key in keys and quote(column) not in columns:
            columns.append(quote(column))
            values.append(expression)
    updated = [quote(_column(fields[k])) for k in keys if k != "external_id"] + ["content_hash"]
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in updated)
    # A record back upstream is live again, unless entity resolution merged it into another: it stays a
    # tombstone pointing at its survivor (its content is still kept current).
    revive, tombstoned = "NULL", f"{table}.deleted_at IS NOT NULL"
    if "merged_into" in fields:
        revive = f"CASE WHEN {table}.merged_into_id IS NULL THEN NULL ELSE {table}.deleted_at END"
        tombstoned += f" AND {table}.merged_into_id IS NULL"
    sql = f"""
        INSERT INTO {table} ({src}, synced_at, {", ".join(columns)})
        SELECT %(source)s, %(now)s, {", ".join(values)}
        FROM jsonb_to_recordset(%(page)s::jsonb) AS v({record_type})
        ON CONFLICT ({src}, external_id) DO UPDATE SET
            {assignments}, synced_at = EXCLUDED.synced_at, deleted_at = {revive}
        WHERE ({table}.content_hash IS DISTINCT FROM EXCLUDED.content_hash OR ({tombstoned}))
          AND {table}.source_updated_at <= EXCLUDED.source_updated_at
        RETURNING {table}.id, ({table}.xmax = 0) AS inserted
    """  # noqa: S608 - identifiers come from model metadata; every value is a bound parameter
    return _Statement(sql=sql, defaults=tuple(defaults))


def _document(rows: list[Row]) -> str:
    """The page as one JSON array: each record's canonical content (what is hashed), its version and hash."""
    items = []
    for row in rows:
        content = {k: v for k, v in row.items() if k not in _BOOKKEEPING}
        text = _canonical(content)
        digest = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
        # The content object is re-opened rather than re-encoded: one encoding per record, not two.
        version = _json_default(row["source_updated_at"])
        items.append(f'{text[:-1]},"source_updated_at":"{version}","content_hash":"{digest}"}}')
    return "[" + ",".join(items) + "]"


@dataclass(frozen=True)
class PreparedRows:
    """A page's rows checked and encoded for its upsert: all the Python work, none of the database's."""

    model: type[models.Model]
    count: int  # rows given
    keys: tuple[str, ...]
    document: str  # "" when no row is valid
    rejected: list[tuple[Row, str]]


def prepare_rows(model: type[models.Model], rows: list[Row]) -> PreparedRows:
    """Validate, deduplicate and encode ``rows`` for ``upsert_prepared``. Touches no database, so a sync
    prepares the next page on its read-ahead thread while this one is written."""
    rejected: list[tuple[Row, str]] = []
    valid: list[Row] = []
    for row in rows:
        reason = validate_row(model, row)
        if reason:
            rejected.append((row, reason))
        else:
            valid.append(row)
    unique = _newest_per_key(valid)
    if not unique:
        return PreparedRows(model, len(rows), (), "", rejected)
    keys = {k for row in unique for k in row}
    if keys & (_BOOKKEEPING - {"source_updated_at"}):
        raise ValueError(f"records for {model.__name__} may not set {sorted(keys & _BOOKKEEPING)}")
    return PreparedRows(model, len(rows), tuple(sorted(keys)), _document(unique), rejected)


def _default(f: models.Field[Any, Any]) -> Any:
    """A field's default as a bound parameter: a JSON default (``dict``) is adapted as the field adapts it."""
    value = f.get_default()
    if isinstance(f, models.JSONField):
        return f.get_db_prep_value(value, connection)
    return value


def upsert_prepared(prepared: PreparedRows, *, source_id: int, now: dt.datetime) -> UpsertResult:
    """Write a prepared page: insert new records, update changed ones that are not older."""
    result = UpsertResult(rejected=list(prepared.rejected))
    if not prepared.document:
        return result
    statement = _statement(prepared.model, prepared.keys)
    params: dict[str, Any] = {"source": source_id, "now": now, "page": prepared.document}
    params.update((name, _default(f)) for name, f in statement.defaults)
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        returned = cursor.fetchall()
    result.changed_ids = [pk for pk, _ in returned]
    result.inserted = sum(1 for _, inserted in returned if inserted)
    result.updated = len(returned) - result.inserted
    result.unchanged = prepared.count - len(result.rejected) - len(returned)
    return result


def upsert_rows(
    model: type[models.Model], *, source_id: int, rows: list[Row], now: dt.datetime
) -> UpsertResult:
    """Insert new records, update changed ones that are not older, leave the rest untouched."""
    return upsert_prepared(prepare_rows(model, rows), source_id=source_id, now=now)
