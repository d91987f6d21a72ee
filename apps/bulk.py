"""Bulk work: inserting many new model rows at once with COPY, for the hot paths that write thousands per
batch, and fewer garbage-collector passes while such a step runs.

``bulk_create`` compiles an ``INSERT ... VALUES`` with every value passed through its field's
``get_db_prep_save``: on the first run of 50 rules, the 21k events and 21k outbox rows of 11,809 new
escalations cost more in that compilation than in PostgreSQL. Here the primary keys are drawn in one
statement first (in order, as ``bulk_create`` would assign them) and the rows stream in with one COPY,
each value adapted by psycopg directly. Only plain field types are accepted; anything else (an
encrypted or custom field) raises rather than being written without its conversion.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import connection, models
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

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


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_collections(threshold: int = 50_000) -> Iterator[None]:
    """Run the garbage collector less often while a bulk step allocates hundreds of thousands of objects
    that stay alive until it ends (a batch's contexts, states, decisions and escalations).

    With the default threshold (a collection every 700 new container objects, a full pass over the whole
    heap every hundred of those) the collector took 1.3 s of the 5.2 s of CPU of the first run of 50 rules
    over 100k change orders: 19 full passes, each over every object Django and the run hold. The previous
    thresholds come back when the last user in the process leaves.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(_gc_saved[0], threshold), max(_gc_saved[1], 20), max(_gc_saved[2], 20))
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)


def reserve_ids(table: str, count: int, column: str = "id") -> list[int]:
    """``count`` values of the table's id sequence, drawn in one statement, in order."""
    if count <= 0:
        return []
    with connection.cursor() as cursor:
        # The sequence is looked up once (a function in FROM): in the select list pg_get_serial_sequence
        # ran once per id, a catalog search of ~4.5 µs of server CPU each (helper audit, session 11).
        cursor.execute(
            "SELECT nextval(seq) FROM CAST(pg_get_serial_sequence(%s, %s) AS regclass) AS seq,"
            " generate_series(1, %s)",
            [table, column, count],
        )
        return [row[0] for row in cursor.fetchall()]


def _encoder(field: models.Field) -> Callable[[Any], Any] | None:
    """How a value of this field goes into COPY: None for as is, or the field's JSON encoding."""
    name = f"{field.model.__name__}.{field.attname}"
    if type(field) is models.JSONField:
        encoder = field.encoder
        return lambda data: None if data is None else json.dumps(data, cls=encoder)
    if type(field) not in _PLAIN:
        raise TypeError(f"{name}: {type(field).__name__} is not a plain field for COPY")
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        raise TypeError(f"{name}: auto_now fields need pre_save; set the value")
    return None


def copy_rows(model: type[models.Model], rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert rows of ``model``, each a mapping of field attnames (``escalation_id``) to values, with one
    COPY; returns their new primary keys, in order. A field a row leaves out takes its default, as on
    a new instance. No instances are built (16–32 µs each for the outbox rows and events of a run).

    The same rows as ``bulk_create`` (no signals either); a constraint violation raises Django's
    ``IntegrityError`` and nothing of the batch is written. Run it inside the caller's transaction.
    """
    if not rows:
        return []
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    plan = [(f.attname, _encoder(f), f.get_default()) for f in fields]
    pk_column = str(meta.pk.column)
    ids = reserve_ids(meta.db_table, len(rows), pk_column)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(c) for c in (pk_column, *(str(f.column) for f in fields)))
    # Django's error wrapper, as for its own queries: a violation raises IntegrityError, not psycopg's.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {quote(meta.db_table)} ({columns}) FROM STDIN") as copy,
    ):
        for pk, row in zip(ids, rows, strict=True):
            values: list[Any] = [pk]
            for attname, encode, default in plan:
                value = row.get(attname, default)
                values.append(value if encode is None else encode(value))
            copy.write_row(values)
    return ids


def copy_insert(objs: Sequence[M]) -> Sequence[M]:
    """:func:`copy_rows` for new instances of one model; sets their primary keys. Returns ``objs``."""
    if not objs:
        return objs
    ids = copy_rows(type(objs[0]), [obj.__dict__ for obj in objs])
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


def array_literal(values: Iterable[object]) -> str:
    """``values`` as a PostgreSQL array literal, for a ``%s::bigint[]`` (or ``text[]`` of identifiers)
    parameter, in their order: psycopg's list adapter quotes each element in Python (121 ms per 100k ids,
    measured), one ``join`` takes a quarter of that, and a full sync hands hundreds of thousands of ids to
    linking and to the rules' marking. Only for numbers and words with no quote, comma, brace or space."""
    return "{" + ",".join(map(str, values)) + "}"


def id_array(ids: Iterable[int]) -> str:
    """``ids``, sorted, as an array literal (``array_literal``)."""
    return array_literal(sorted(ids))


def stored_maker(model: type[M], alias: str) -> Callable[..., M]:
    """Instances of rows this process has just stored (``COPY``), from their attributes' values as keyword
    arguments (``rule_version_id=…``), marked as loaded from ``alias``. Without ``Model.__init__`` when
    nobody listens to the model's init signals: ``__init__`` with keyword arguments costs more than the rest
    of recording a batch's rows (the audit's entries, the rules' matched decisions); with a listener, through
    it, so the listener sees every instance."""
    if pre_init.has_listeners(model) or post_init.has_listeners(model):

        def init(**values: Any) -> M:
            instance = model(**values)
            instance._state.adding, instance._state.db = False, alias
            return instance

        return init
    new = model.__new__

    def make(**values: Any) -> M:
        instance = new(model)
        state = ModelState()
        state.adding, state.db = False, alias
        instance.__dict__.update(values, _state=state)
        return instance

    return make
