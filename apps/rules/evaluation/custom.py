"""Operator-defined facts in the database: their versions, the catalogue entries installed from them, and
their two computations — SQL columns of the facts query (batch runs) and Python per subject (events).

Definitions are validated and worded by the pure :mod:`apps.rules.customfacts`; here they are stored,
installed into the catalogue (every process reinstalls them when the current versions changed: one small
query at the start of an evaluation, a preview or a save) and run. Identifiers in the SQL come from
``customfacts``' whitelist; every value is a parameter.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from apps.rules.engine import customfacts as cf
from apps.rules.engine.catalogue import CUSTOM_PREFIX, custom_definitions, set_custom_loader
from apps.rules.engine.customfacts import Definition, DefinitionError, SqlParams

log = logging.getLogger(__name__)

_lock = threading.Lock()
_installed_token: list[tuple[int, ...] | None] = [None]


def installed() -> dict[str, Definition]:
    """The installed definitions, by ``custom.<key>`` name."""
    return dict(custom_definitions())


def refresh(*, force: bool = False) -> dict[str, Definition]:
    """Install the current version of every custom fact when they changed since the last install."""
    from apps.rules.models import CustomFact

    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(array_agg(current_id ORDER BY id), '{}') FROM rules_customfact")
        token = tuple(cursor.fetchone()[0])
    with _lock:
        if force or token != _installed_token[0]:
            rows = CustomFact.objects.filter(current__isnull=False).select_related("current")
            specs = [(row.current.spec, row.current.number) for row in rows if row.current is not None]
            cf.install(cf.load_definitions(specs))
            _installed_token[0] = token
    return installed()


def _load_on_miss() -> None:
    # A custom.* name not installed yet (created in another process): look again, once. Outside a
    # database (pure tests) there is nothing to load.
    try:
        refresh()
    except Exception:
        log.debug("custom facts not loaded", exc_info=True)


set_custom_loader(_load_on_miss)


def for_subject(subject_type: str, names: Iterable[str] | None = None) -> list[Definition]:
    """The installed custom facts of ``subject_type`` (or only ``names`` and what they read), operands
    first."""
    defs = {n: d for n, d in installed().items() if d.subject == subject_type}
    return cf.order(defs, names)


# --------------------------------------------------------------------------------------------------
# SQL: extra columns of the facts query.


def _today(now: dt.datetime) -> dt.date:
    return timezone.localtime(now).date()


def _build(
    defs: Sequence[Definition], filtered: bool, now: dt.datetime
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(joins, columns, params) of these definitions over the facts row ``f`` and the subject row ``s``."""
    today = _today(now)
    joins: list[str] = []
    columns: list[str] = []
    params: dict[str, Any] = {}
    exprs: dict[str, str] = {}
    for i, d in enumerate(defs):
        p = SqlParams(f"cf_{d.key}_")
        if d.kind == "aggregate":
            join = cf.aggregate_join(
                d, f"cfa{i}", "s", p, now=now, today=today, ids_param="%(ids)s" if filtered else None
            )
            joins.append(join.sql)
            exprs[d.name] = join.value
        else:
            a, b = (exprs.get(n) or f"f.{cf.quoted(n)}" for n in (d.a, d.b))
            exprs[d.name] = cf.combined_sql(d, a, b)
        params.update(p.values)
        columns.append(f"{exprs[d.name]} AS {cf.quoted(d.name)}")
    return joins, columns, params


def wrap_query(
    base: str, subject_type: str, filtered: bool, *, ordered: bool, names: Iterable[str] | None = None
) -> str:
    """The facts query ``base`` (without its ORDER BY) with a column per custom fact of ``subject_type``
    (only ``names`` and the custom facts they read, when given: a batch run computes what its rules read)."""
    defs = for_subject(subject_type, names)
    if not defs:
        return base + ("\nORDER BY subject_id" if ordered else "")
    joins, columns, _ = _build(defs, filtered, timezone.now())
    table = cf.SUBJECT_KEYS[subject_type].table
    # Identifiers come from customfacts' whitelist (tables, columns, keys); values are bound parameters.
    sql = (
        f"SELECT f.*, {', '.join(columns)} FROM ({base}) f "  # noqa: S608
        f"JOIN {table} s ON s.id = f.subject_id {' '.join(joins)}"
    )
    return sql + ("\nORDER BY f.subject_id" if ordered else "")


def params(now: dt.datetime) -> dict[str, Any]:
    """The parameters of every installed custom fact's SQL (names unique per fact: ``cf_<key>_<n>``)."""
    out: dict[str, Any] = {}
    by_subject: dict[str, list[Definition]] = defaultdict(list)
    for d in installed().values():
        by_subject[d.subject].append(d)
    for defs in by_subject.values():
        out.update(_build(cf.order({d.name: d for d in defs}), False, now)[2])
    return out


# --------------------------------------------------------------------------------------------------
# Python: one subject (or a few) at a time.


def python_values(
    subject_type: str,
    ids: Sequence[int],
    base: Mapping[int, Mapping[str, Any]],
    *,
    now: dt.datetime,
) -> dict[int, dict[str, Any]]:
    """``{subject id: {custom.<key>: value}}`` computed in Python from the subjects' related rows and
    their built-in facts ``base``; the same values as the SQL columns (property-tested)."""
    today = _today(now)
    defs = for_subject(subject_type)
    out: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if not defs or not ids:
        return out
    # One fetch per related set: the union of the columns its aggregates read.
    wanted: dict[str, set[str]] = defaultdict(set)
    for d in defs:
        if d.kind == "aggregate":
            wanted[d.related].update(cf.fetch_columns(d))
    rows_by_set: dict[str, tuple[dict[int, Any], dict[Any, list[dict[str, Any]]]]] = {}
    with connection.cursor() as cursor:
        for set_name, names in wanted.items():
            related = cf.RELATED_SETS[set_name]
            key = cf.subject_key(set_name, subject_type)
            assert key is not None
            cursor.execute(
                f"SELECT t.id, t.{key.subject} FROM {key.table} t WHERE t.id = ANY(%s)",  # noqa: S608
                [list(ids)],
            )
            keys = dict(cursor.fetchall())
            join = (
                f" JOIN entities_project rp ON rp.id = r.{related.project_column} AND rp.deleted_at IS NULL"
                if key.via_project
                else ""
            )
            columns = sorted(names)
            cursor.execute(
                f"SELECT {key.rows}, {', '.join(f'r.{c}' for c in columns)} "  # noqa: S608
                f"FROM {related.table} r{join} WHERE r.deleted_at IS NULL AND {key.rows} = ANY(%s)",
                [[k for k in set(keys.values()) if k is not None]],
            )
            grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for row in cursor.fetchall():
                grouped[row[0]].append(dict(zip(columns, row[1:], strict=True)))
            rows_by_set[set_name] = (keys, grouped)
    for subject_id in ids:
        values = out[subject_id]
        facts = base.get(subject_id, {})
        for d in defs:
            if d.kind == "aggregate":
                keys, grouped = rows_by_set[d.related]
                key_value = keys.get(subject_id)
                rows = grouped.get(key_value, []) if key_value is not None else []
                values[d.name] = cf.aggregate_rows(d, rows, now=now, today=today)
            else:
                a = values[d.a] if d.a in values else facts.get(d.a)
                b = values[d.b] if d.b in values else facts.get(d.b)
                values[d.name] = cf.combine(d, a, b)
    return out


# --------------------------------------------------------------------------------------------------
# Saving a definition (admin), and previewing one.


class CustomFactRefused(ValueError):
    """A definition refused, with every reason (``errors``: (field, message))."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{w}: {m}" if w else m for w, m in self.errors))


def validate(spec: Mapping[str, Any]) -> Definition:
    """The definition of ``spec`` against the current custom facts, or :class:`CustomFactRefused`."""
    from apps.rules.models import CustomFact

    current = refresh()
    try:
        definition = cf.parse_definition(spec, others=current)
    except DefinitionError as exc:
        raise CustomFactRefused(exc.errors) from None
    existing = CustomFact.objects.filter(key=definition.key).select_related("current").first()
    if existing is not None and existing.current is not None:
        old = existing.current.spec
        changed = [
            f"{name} ({old.get(name)!r} → {new!r})"
            for name, new in (
                ("subject", definition.subject),
                ("type", definition.type.value),
                ("unit", definition.unit),
            )
            if old.get(name) != new
        ]
        if changed:
            message = (
                f"{definition.name} keeps its subject, type and unit (rules read it); changed: "
                f"{', '.join(changed)}. Define a new fact instead."
            )
            raise CustomFactRefused([("", message)])
    return definition


def custom_fact_save(*, spec: Mapping[str, Any], actor: Any) -> Any:
    """Validate ``spec`` and save it as the fact's next version (created when new); audited. Nothing is
    saved when it is refused (:class:`CustomFactRefused`, with every reason)."""
    from apps.audit.services import audit_record
    from apps.rules.models import CustomFact, CustomFactVersion

    definition = validate(spec)
    with transaction.atomic():
        fact, _ = CustomFact.objects.select_for_update().get_or_create(
            key=definition.key, defaults={"subject_type": definition.subject}
        )
        number = (fact.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
        user = actor if getattr(actor, "pk", None) else None
        version = CustomFactVersion.objects.create(
            fact=fact, number=number, spec=definition.to_dict(), saved_at=timezone.now(), saved_by=user
        )
        fact.current = version
        fact.save(update_fields=["current", "updated_at"])
        audit_record(
            actor=actor,
            action="custom_fact.saved",
            object_type="custom_fact",
            object_id=fact.pk,
            data={
                "name": definition.name,
                "label": definition.shown_label,
                "version": number,
                "spec": version.spec,
            },
        )
    refresh()
    return version


def preview(
    spec: Mapping[str, Any], *, sample: int = 10, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """The value of a definition (not saved) for ``sample`` real subjects of its type, computed as
    events compute it; raises :class:`CustomFactRefused` for an invalid one."""
    from apps.rules.evaluation.facts import compute_contexts

    definition = validate(spec)
    now = now or timezone.now()
    table = cf.SUBJECT_KEYS[definition.subject].table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE deleted_at IS NULL ORDER BY id LIMIT %s",  # noqa: S608
            [max(1, min(sample, 100))],
        )
        ids = [row[0] for row in cursor.fetchall()]
    if not ids:
        return []
    saved = installed()
    try:
        cf.install({**saved, definition.name: definition})
        contexts = list(compute_contexts(definition.subject, ids, now=now, refresh_custom=False))
    finally:
        cf.install(saved)
    return [{"subject_id": c.subject_id, "value": c.values.get(definition.name)} for c in contexts]


def is_custom(name: str) -> bool:
    return name.startswith(CUSTOM_PREFIX)
