"""Inserting many new model rows at once with COPY, for the hot paths that write thousands per batch.

``bulk_create`` compiles an ``INSERT ... VALUES`` with every value passed through its field's
``get_db_prep_save``: on the first run of 50 rules, the 21k events and 21k outbox rows of 11,809 new
escalations cost more in that compilation than in PostgreSQL. Here the primary keys are drawn in one
statement first (in order, as ``bulk_create`` would assign them) and the rows stream in with one COPY,
each value adapted by psycopg directly. Only plain field types are accepted; anything else (an
encrypted or custom field) raises rather than being written without its conversion.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connection, models

M = TypeVar("M", bound=models.Model)

# Field types (exactly these: a subclass may convert its values) whose Python value psycopg writes as
# the column expects; a foreign key writes its id attribute.
_PLAIN = {
    models.BooleanField,
    models.CharField,
    models.EmailField,
    models.SlugField,
    models.URLField,
    models.TextField,
    models.SmallIntegerField,
    models.IntegerField,
    models.BigIntegerField,
    models.PositiveSmallIntegerField,
    models.PositiveIntegerField,
    models.PositiveBigIntegerField,
    models.DecimalField,
    models.FloatField,
    models.DateTimeField,
    models.DateField,
    models.UUIDField,
    models.ForeignKey,
}


def reserve_ids(table: str, count: int, column: str = "id") -> list[int]:
    """``count`` values of the table's id sequence, drawn in one statement, in order."""
    if count <= 0:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [table, column, count],
        )
        return [row[0] for row in cursor.fetchall()]


def _json_getter(attname: str, encoder: type[json.JSONEncoder] | None) -> Callable[[Any], Any]:
    def value(obj: Any) -> Any:
        data = getattr(obj, attname)
        return None if data is None else json.dumps(data, cls=encoder)

    return value


def _writers(model: type[models.Model]) -> list[tuple[str, Callable[[Any], Any]]]:
    """(column, value getter) for each concrete field but the primary key."""
    writers: list[tuple[str, Callable[[Any], Any]]] = []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        name = f"{model.__name__}.{field.attname}"
        if type(field) is models.JSONField:
            getter = _json_getter(field.attname, field.encoder)
        elif type(field) in _PLAIN:
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                raise TypeError(f"{name}: auto_now fields need pre_save; set the value")
            getter = operator.attrgetter(field.attname)
        else:
            raise TypeError(f"{name}: {type(field).__name__} is not a plain field for COPY")
        writers.append((str(field.column), getter))
    return writers


def copy_insert(objs: Sequence[M]) -> Sequence[M]:
    """Insert new instances of one model with one COPY; sets their primary keys. Returns ``objs``.

    The same rows as ``bulk_create(objs)`` (no signals either); a constraint violation raises and
    nothing of the batch is written. Run it inside the caller's transaction.
    """
    if not objs:
        return objs
    model = type(objs[0])
    meta = model._meta
    writers = _writers(model)
    pk_column = str(meta.pk.column)
    ids = reserve_ids(meta.db_table, len(objs), pk_column)
    columns = ", ".join(connection.ops.quote_name(c) for c in (pk_column, *(c for c, _ in writers)))
    # Django's error wrapper, as for its own queries: a violation raises IntegrityError, not psycopg's.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN") as copy,
    ):
        for obj, pk in zip(objs, ids, strict=True):
            copy.write_row((pk, *(value(obj) for _, value in writers)))
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        obj._state.adding, obj._state.db = False, connection.alias
    return objs


def lz4_columns(table: str, *columns: str) -> Any:
    """A migration operation compressing these large columns with lz4 where the server has it.

    PostgreSQL compresses values over ~2 KB (a decision's facts, an escalation's evidence) with pglz by
    default; lz4 writes them several times faster, which the first run of 50 rules felt (about 0.6 s of
    9.8). A server built without lz4 keeps pglz: the columns work the same either way.
    """
    from django.db import migrations

    def alter(schema_editor: Any, method: str) -> None:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
            )
            row = cursor.fetchone()
        if not (row and row[0]):
            return
        quote = schema_editor.quote_name
        for column in columns:
            schema_editor.execute(
                f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column)} SET COMPRESSION {method}"
            )

    return migrations.RunPython(
        lambda apps, schema_editor: alter(schema_editor, "lz4"),
        lambda apps, schema_editor: alter(schema_editor, "default"),
        elidable=False,
    )
