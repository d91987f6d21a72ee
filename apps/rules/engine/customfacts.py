"""Operator-defined facts (SPEC "Operator-defined facts"): definitions, validation, and their two
computations — a SQL expression for batch runs and a Python computation for one subject at a time.

A definition is data, never code. Every identifier in the SQL it becomes (tables, columns, joins) comes
from the whitelist below (:data:`RELATED_SETS`, :data:`SUBJECT_KEYS`); every value an operator typed
(a filter's value, a window) is a query parameter. No text of a definition is ever put into SQL.

Kinds:

* ``aggregate``: ``count`` / ``sum`` / ``min`` / ``max`` / ``avg`` of a field over one of the subject's
  related record sets (the change orders, milestones, submittals or financial lines of the subject's
  project, or of all its projects for a client), rows kept by ``filters`` (``field op value``, all must
  hold) and an optional ``window`` (``30d``: the set's date between now − 30 days and now).
* ``ratio``: ``a / b × 100`` (a percent; null when either is null or ``b`` is 0).
* ``difference``: ``a − b`` (the operands' type and unit; null when either is null).

Null semantics, the same in both computations: a filter on a null field holds only for ``is_null``;
``count`` and ``sum`` of no rows are 0; ``min`` / ``max`` / ``avg`` of no values are null; ``avg`` and
``ratio`` are rounded to 4 places (half away from zero), as ``project.margin_pct`` is.

Pure Python, no Django: the Django side (:mod:`apps.rules.custom`) stores versions and runs the SQL.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from apps.rules.engine.catalogue import Fact as CatalogueFact
from apps.rules.engine.catalogue import (
    FactType,
    builtin_fact,
    custom_fact,
    is_visible,
    register_custom_facts,
    words_of,
)
from apps.rules.engine.durations import format_duration, parse_duration
from apps.rules.engine.values import _RULE_VALUE, _Invalid, _kind, _show

KINDS: Final = ("aggregate", "ratio", "difference")
FUNCTIONS: Final = ("count", "sum", "min", "max", "avg")
PREFIX: Final = "custom."
_KEY: Final = re.compile(r"[a-z][a-z0-9_]{0,59}")
_PLACES: Final = Decimal("0.0001")
MAX_FILTERS: Final = 10
MAX_LIST: Final = 100

_NUMERIC: Final = (FactType.MONEY, FactType.PERCENT, FactType.INT)
# The operators a filter may use on a field of each type (no `contains`: no pattern is built from text).
FILTER_OPS: Final[dict[FactType, tuple[str, ...]]] = {
    FactType.MONEY: ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "is_null"),
    FactType.PERCENT: ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "is_null"),
    FactType.INT: ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "is_null"),
    FactType.DATE: ("eq", "ne", "gt", "gte", "lt", "lte", "is_null"),
    FactType.TEXT: ("eq", "ne", "in", "not_in", "is_null"),
    FactType.BOOL: ("is", "is_null"),
}
OP_WORDS: Final = {
    "eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "in": "in", "not_in": "not in",
    "is": "is", "is_null": "is empty",
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The whitelist: related record sets, their fields, and how a subject reaches its rows.


@dataclass(frozen=True, slots=True)
class SetField:
    """One field of a related record set an operator may aggregate or filter on.

    ``sql`` is the column expression over the set's alias ``r`` (code, never operator text); ``python``
    reads the same value from a row fetched with ``columns``.
    """

    name: str
    type: FactType
    unit: str
    sql: str
    columns: tuple[str, ...]
    python: Callable[[Mapping[str, Any]], Any]
    label: str = ""
    choices: tuple[str, ...] = ()


def column(
    name: str, kind: FactType, unit: str = "", label: str = "", choices: tuple[str, ...] = ()
) -> SetField:
    """A field that is a plain column of the set's table."""
    return SetField(name, kind, unit, f"r.{name}", (name,), lambda row: row[name], label or name, choices)


@dataclass(frozen=True, slots=True)
class RelatedSet:
    """A set of records related to subjects: its table, fields and the date a window applies to."""

    name: str
    label: str  # plural, in words: "change orders"
    table: str
    fields: Mapping[str, SetField]
    window_field: str  # a field of type DATE, or the datetime column named in ``window_datetime``
    window_datetime: bool = False  # the window column holds timestamps (compared with now), not dates
    # The column of a row holding the project it belongs to (every built-in set is project-scoped).
    project_column: str = "project_id"
    # The canonical entity its rows are (what ages the facts computed from it: facts.FACT_INPUTS).
    entity: str = ""


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """How a subject type reaches a set's rows: ``rows`` is the row's key expression (over ``r``, and
    ``rp``, the row's live project, when ``via_project``), ``subject`` the column of the subject's own
    table holding the same key."""

    table: str
    subject: str
    rows: str
    via_project: bool = False


_MONEY, _INT, _TEXT, _BOOL, _DATE = FactType.MONEY, FactType.INT, FactType.TEXT, FactType.BOOL, FactType.DATE


def _present(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: row[name] is not None


RELATED_SETS: dict[str, RelatedSet] = {}
# subject type -> how its rows are keyed, for every project-scoped set (a set may override per subject).
SUBJECT_KEYS: dict[str, SubjectKey] = {
    "project": SubjectKey("entities_project", "id", "r.project_id"),
    "change_order": SubjectKey("entities_changeorder", "project_id", "r.project_id"),
    "submittal": SubjectKey("entities_submittal", "project_id", "r.project_id"),
    "client": SubjectKey("entities_client", "id", "rp.client_id", via_project=True),
}
# Per (set, subject type) overrides: a set that is not project-scoped (documents link to a client too).
SET_SUBJECT_KEYS: dict[tuple[str, str], SubjectKey] = {}


def register_related_set(related: RelatedSet, keys: Mapping[str, SubjectKey] | None = None) -> None:
    """Add a related record set to the whitelist (a subject type's package calls this for its records);
    ``keys`` overrides how given subject types reach it."""
    for name, f in related.fields.items():
        if name != f.name or not _KEY.fullmatch(name):
            raise ValueError(f"{related.name}: bad field name {name!r}")
    if related.window_field not in related.fields and not related.window_datetime:
        raise ValueError(f"{related.name}: the window field must be one of its fields")
    RELATED_SETS[related.name] = related
    for subject_type, key in (keys or {}).items():
        SET_SUBJECT_KEYS[(related.name, subject_type)] = key


def register_subject_key(subject_type: str, key: SubjectKey) -> None:
    """Let a new subject type reach the project-scoped sets (``document``: through its project)."""
    SUBJECT_KEYS[subject_type] = key


def subject_key(set_name: str, subject_type: str) -> SubjectKey | None:
    return SET_SUBJECT_KEYS.get((set_name, subject_type)) or SUBJECT_KEYS.get(subject_type)


def sets_for(subject_type: str) -> list[RelatedSet]:
    return [s for s in RELATED_SETS.values() if subject_key(s.name, subject_type) is not None]


register_related_set(
    RelatedSet(
        "change_orders", "change orders", "entities_changeorder",
        {
            "amount": column("amount", _MONEY, "USD", "amount"),
            "status": column(
                "status", _TEXT, label="status", choices=("draft", "pending", "approved", "rejected", "void")
            ),
        },
        entity="change_order", window_field="created_upstream_at", window_datetime=True,
    )
)  # fmt: skip
register_related_set(
    RelatedSet(
        "milestones", "milestones", "entities_milestone",
        {
            "due_date": column("due_date", _DATE, label="due date"),
            "completed_date": column("completed_date", _DATE, label="completed date"),
            "completed": SetField(
                "completed", _BOOL, "", "(r.completed_date IS NOT NULL)", ("completed_date",),
                _present("completed_date"), "completed",
            ),
        },
        entity="milestone", window_field="due_date",
    )
)  # fmt: skip
register_related_set(
    RelatedSet(
        "submittals", "submittals", "entities_submittal",
        {
            "revision": column("revision", _INT, "", "revision"),
            "status": column("status", _TEXT, label="status"),
            "schedule_critical": column("schedule_critical", _BOOL, label="schedule critical"),
            "due_date": column("due_date", _DATE, label="due date"),
            "returned_date": column("returned_date", _DATE, label="returned date"),
            "returned": SetField(
                "returned", _BOOL, "", "(r.returned_date IS NOT NULL)", ("returned_date",),
                _present("returned_date"), "returned",
            ),
        },
        entity="submittal", window_field="due_date",
    )
)  # fmt: skip
register_related_set(
    RelatedSet(
        "financial_lines", "financial lines", "entities_financialline",
        {
            "kind": column("kind", _TEXT, label="kind", choices=("invoice", "bill", "purchase")),
            "amount": column("amount", _MONEY, "USD", "amount"),
            "balance": column("balance", _MONEY, "USD", "balance"),
            "txn_date": column("txn_date", _DATE, label="date"),
            "due_date": column("due_date", _DATE, label="due date"),
        },
        entity="financial_line", window_field="txn_date",
    )
)  # fmt: skip
register_related_set(
    RelatedSet(
        "documents", "documents", "entities_document",
        {
            "label": column("label", _TEXT, label="label"),
            "amount": column("amount", _MONEY, "USD", "amount"),
            "document_date": column("document_date", _DATE, label="document date"),
        },
        entity="document", window_field="document_date",
    )
)  # fmt: skip
# Confidence scores are not in the set yet (filters know no score type); the built-in
# project.documents_low_confidence_30d counts low-confidence documents.
# Documents are subjects too: they reach the project-scoped sets through the project they are linked to.
register_subject_key("document", SubjectKey("entities_document", "project_id", "r.project_id"))


# --------------------------------------------------------------------------------------------------
# Definitions.


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: str
    value: Any  # coerced: Decimal / int / str / bool / date, a tuple for in / not_in, a bool for is_null

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "value": _json(self.value)}


@dataclass(frozen=True, slots=True)
class Definition:
    """A validated custom fact. Build with :func:`parse_definition`."""

    key: str
    subject: str
    type: FactType
    unit: str
    description: str
    kind: str
    related: str = ""
    function: str = ""
    field: str = ""
    filters: tuple[Filter, ...] = ()
    window: dt.timedelta | None = None
    a: str = ""
    b: str = ""
    version: int = 0
    # What people read for it ("Pending change orders"); empty: derived from the key.
    label: str = ""

    @property
    def name(self) -> str:
        return PREFIX + self.key

    @property
    def shown_label(self) -> str:
        """The operator's label, else the key in words (``co_pending_30d`` → ``Co pending 30d``)."""
        return self.label or words_of(self.key)

    @property
    def operands(self) -> tuple[str, ...]:
        return (self.a, self.b) if self.kind != "aggregate" else ()

    def to_dict(self) -> dict[str, Any]:
        """The canonical spec (JSON-safe; what a version stores and hashes)."""
        out: dict[str, Any] = {
            "key": self.key,
            "subject": self.subject,
            "type": self.type.value,
            "unit": self.unit,
            "description": self.description,
            "kind": self.kind,
        }
        if self.label:
            out["label"] = self.label
        if self.kind == "aggregate":
            out.update(
                related=self.related,
                function=self.function,
                field=self.field,
                filters=[f.to_dict() for f in self.filters],
                window=format_duration(self.window) if self.window else "",
            )
        else:
            out.update(a=self.a, b=self.b)
        return out

    def definition_text(self) -> str:
        """The definition in words: ``count of change orders in the last 30 days where status = pending``."""
        if self.kind == "ratio":
            return f"{self.a} / {self.b} × 100"
        if self.kind == "difference":
            return f"{self.a} − {self.b}"
        related = RELATED_SETS[self.related]
        what = f"{self.function} of {related.label}"
        if self.function != "count" or self.field:
            what = f"{self.function} of {self.field} over {related.label}"
        if self.window:
            what += f" in the last {_window_words(self.window)}"
        if self.filters:
            what += " where " + " and ".join(_filter_words(f) for f in self.filters)
        return what

    def as_fact(self) -> CatalogueFact:
        """The catalogue entry rules see (``custom.<key>``, visible to rules on ``subject``)."""
        plain = self.description or self.definition_text()
        unit_words: tuple[str, str] = ("", "")
        if self.unit == "count" and self.kind == "aggregate":
            plural = RELATED_SETS[self.related].label
            unit_words = (plural.removesuffix("s"), plural)
        elif self.unit in ("day", "days"):
            unit_words = ("day", "days")
        return CatalogueFact(
            self.name, self.type, self.unit, self.definition_text(), "fulcrum",
            choices=(), label=self.shown_label, plain=plain, applies_to=(self.subject,),
            version=self.version, unit_words=unit_words,
        )  # fmt: skip


def _window_words(window: dt.timedelta) -> str:
    text = format_duration(window)
    number, unit = int(text[:-1]), text[-1]
    words = {
        "d": ("day", "days"),
        "h": ("hour", "hours"),
        "m": ("minute", "minutes"),
        "s": ("second", "seconds"),
    }
    one, many = words[unit]
    return f"{number} {one if number == 1 else many}"


def _filter_words(f: Filter) -> str:
    if f.op == "is_null":
        return f"{f.field} {'is empty' if f.value else 'is not empty'}"
    if f.op == "is":
        return f"{f.field} is {'true' if f.value else 'false'}"
    value = f.value
    shown = ", ".join(str(_json(v)) for v in value) if isinstance(value, tuple) else str(_json(value))
    if isinstance(value, tuple):
        shown = f"[{shown}]"
    return f"{f.field} {OP_WORDS[f.op]} {shown}"


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else format(value.normalize(), "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


class DefinitionError(ValueError):
    """A definition with problems; ``errors`` lists them as ``(field, message)``."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{where}: {message}" if where else message for where, message in errors))


_SPEC_FIELDS: Final = (
    "key", "label", "subject", "type", "unit", "description", "kind", "related", "function", "field",
    "filters", "window", "a", "b",
)  # fmt: skip
MAX_LABEL: Final = 100


def _field_fact(f: SetField) -> CatalogueFact:
    return CatalogueFact(f"field.{f.name}", f.type, f.unit, f.label, "fulcrum", choices=f.choices)


def parse_definition(
    raw: Mapping[str, Any],
    *,
    others: Mapping[str, Definition] | None = None,
    version: int = 0,
) -> Definition:
    """Validate ``raw`` (the spec an operator saved) and build its definition.

    ``others`` are the other custom facts (by ``custom.<key>`` name; this one's own name, if present, is
    replaced by the new definition), used for operands and for cycles. Raises :class:`DefinitionError`
    listing every problem.
    """
    errors: list[tuple[str, str]] = []

    def bad(where: str, message: str) -> None:
        errors.append((where, message))

    if not isinstance(raw, Mapping):
        raise DefinitionError([("", f"a custom fact is a mapping, got {_kind(raw)}")])
    for name in raw:
        if name not in _SPEC_FIELDS:
            bad(str(name), f"unknown field {_show(name)}")
    key = raw.get("key")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        bad("key", f"{_show(key)} is not a key: lowercase letters, digits and _, starting with a letter")
        key = ""
    subject = raw.get("subject")
    if subject not in SUBJECT_KEYS:
        bad("subject", f"{_show(subject)} is not a subject type; choose from {', '.join(SUBJECT_KEYS)}")
        subject = ""
    try:
        declared = FactType(str(raw.get("type")))
    except ValueError:
        bad(
            "type",
            f"{_show(raw.get('type'))} is not a type; choose from {', '.join(t.value for t in FactType)}",
        )
        declared = None
    unit = raw.get("unit", "")
    if not isinstance(unit, str) or len(unit) > 20:
        bad("unit", f"expected a short text, got {_show(unit)}")
        unit = ""
    label = raw.get("label", "")
    if not isinstance(label, str) or len(label.strip()) > MAX_LABEL or not label.isprintable():
        bad("label", f"expected a line of text of at most {MAX_LABEL} characters")
        label = ""
    label = " ".join(label.split())
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        bad("description", "expected a text of at most 500 characters")
        description = ""
    kind = raw.get("kind")
    if kind not in KINDS:
        bad("kind", f"{_show(kind)} is not a kind; choose from {', '.join(KINDS)}")
    name = PREFIX + key if key else ""
    defs: dict[str, Definition] = dict(others or {})
    defs.pop(name, None)

    inferred: tuple[FactType, str] | None = None
    related_name = function = field_name = a = b = ""
    filters: list[Filter] = []
    window: dt.timedelta | None = None
    if kind == "aggregate":
        for unused in ("a", "b"):
            if raw.get(unused):
                bad(unused, "an aggregate has no operand facts")
        related_name = raw.get("related", "")
        related = RELATED_SETS.get(related_name) if isinstance(related_name, str) else None
        if related is None:
            bad(
                "related",
                f"{_show(related_name)} is not a related record set; choose from {', '.join(RELATED_SETS)}",
            )
            related_name = ""
        elif subject and subject_key(related.name, subject) is None:
            bad("related", f"a {subject} has no {related.label}")
        function = raw.get("function", "")
        if function not in FUNCTIONS:
            bad("function", f"{_show(function)} is not a function; choose from {', '.join(FUNCTIONS)}")
            function = ""
        field_name = raw.get("field", "") or ""
        set_field: SetField | None = None
        if related is not None:
            if field_name:
                set_field = related.fields.get(field_name) if isinstance(field_name, str) else None
                if set_field is None:
                    bad(
                        "field",
                        f"{_show(field_name)} is not a field of {related.label}; "
                        f"choose from {', '.join(related.fields)}",
                    )
                    field_name = ""
            elif function and function != "count":
                bad("field", f"{function} needs a field of {related.label}")
        if function and related is not None and (set_field is not None or function == "count"):
            inferred = _aggregate_type(function, set_field, bad)
        raw_filters = raw.get("filters") or []
        if not isinstance(raw_filters, list):
            bad("filters", f"expected a list of {{field, op, value}}, got {_kind(raw_filters)}")
            raw_filters = []
        if len(raw_filters) > MAX_FILTERS:
            bad("filters", f"at most {MAX_FILTERS} filters")
        for i, item in enumerate(raw_filters[:MAX_FILTERS]):
            parsed = _filter(item, related, f"filters[{i}]", bad) if related is not None else None
            if parsed is not None:
                filters.append(parsed)
        raw_window = raw.get("window") or ""
        if raw_window:
            try:
                window = parse_duration(raw_window)
            except ValueError as exc:
                bad("window", str(exc))
            if (
                window is not None
                and related is not None
                and not related.window_datetime
                and window % dt.timedelta(days=1)
            ):
                bad(
                    "window", f"{related.label} are dated by day: the window must be whole days (such as 30d)"
                )
                window = None
    elif kind in ("ratio", "difference"):
        for unused in ("related", "function", "field", "filters", "window"):
            if raw.get(unused):
                bad(unused, f"a {kind} has operand facts a and b, not {unused}")
        operand_types: list[tuple[FactType, str] | None] = []
        for which in ("a", "b"):
            operand = raw.get(which)
            operand_types.append(_operand(operand, which, name, subject, defs, bad))
        a, b = (str(raw.get("a") or ""), str(raw.get("b") or ""))
        ta, tb = operand_types
        if ta is not None and tb is not None:
            inferred = _combined_type(str(kind), ta, tb, bad)
    if declared is not None and inferred is not None and (declared, unit) != inferred:
        got = f"{inferred[0].value}" + (f" ({inferred[1]})" if inferred[1] else "")
        said = f"{declared.value}" + (f" ({unit})" if unit else "")
        bad(
            "type", f"this {kind} is {got}, not {said}: set type {inferred[0].value} and unit {inferred[1]!r}"
        )
    if errors:
        raise DefinitionError(errors)
    assert declared is not None
    definition = Definition(
        key=key, subject=str(subject), type=declared, unit=unit, description=description, kind=str(kind),
        related=related_name, function=function, field=field_name, filters=tuple(filters), window=window,
        a=a, b=b, version=version, label=label,
    )  # fmt: skip
    cycle = find_cycle({**defs, name: definition})
    if cycle:
        raise DefinitionError([("", "a cycle among custom facts: " + " → ".join(cycle))])
    return definition


def _aggregate_type(
    function: str, set_field: SetField | None, bad: Callable[[str, str], None]
) -> tuple[FactType, str] | None:
    if function == "count":
        return (FactType.INT, "count")
    assert set_field is not None
    if function in ("min", "max"):
        if set_field.type in (*_NUMERIC, FactType.DATE):
            return (set_field.type, set_field.unit)
        bad("field", f"{function} needs a number or a date; {set_field.name} is {set_field.type.value}")
        return None
    if function == "sum":
        if set_field.type in _NUMERIC:
            return (set_field.type, set_field.unit)
        bad("field", f"sum needs a number; {set_field.name} is {set_field.type.value}")
        return None
    # avg: the mean of money is money, of a percent a percent; of whole numbers it is not whole.
    if set_field.type in (FactType.MONEY, FactType.PERCENT):
        return (set_field.type, set_field.unit)
    if set_field.type is FactType.INT:
        bad(
            "function",
            f"the average of {set_field.name} (whole numbers) is not a whole number; "
            "use a ratio of a sum and a count",
        )
        return None
    bad("field", f"avg needs money or a percent; {set_field.name} is {set_field.type.value}")
    return None


def _combined_type(
    kind: str, ta: tuple[FactType, str], tb: tuple[FactType, str], bad: Callable[[str, str], None]
) -> tuple[FactType, str] | None:
    for which, (t, _) in (("a", ta), ("b", tb)):
        if t not in _NUMERIC:
            bad(which, f"a {kind} needs numbers; this fact is {t.value}")
            return None
    if ta[1] != tb[1] or (ta[0] is FactType.PERCENT) != (tb[0] is FactType.PERCENT):
        bad(
            "b",
            f"a {kind} needs facts of one unit: {ta[0].value} ({ta[1] or 'no unit'}) "
            f"and {tb[0].value} ({tb[1] or 'no unit'})",
        )
        return None
    if kind == "ratio":
        return (FactType.PERCENT, "%")
    if ta[0] != tb[0]:
        bad("b", f"a difference needs facts of one type: {ta[0].value} and {tb[0].value}")
        return None
    return ta


def _operand(
    raw: object,
    which: str,
    own: str,
    subject: str,
    defs: Mapping[str, Definition],
    bad: Callable[[str, str], None],
) -> tuple[FactType, str] | None:
    if not isinstance(raw, str) or not raw:
        bad(which, f"expected a fact name, got {_kind(raw)}")
        return None
    if raw == own:
        bad(which, f"a cycle among custom facts: {own} → {own}")
        return None
    if raw.startswith(PREFIX):
        other = defs.get(raw)
        if other is None:
            bad(which, f"unknown fact {_show(raw)}")
            return None
        if subject and other.subject != subject:
            bad(which, f"{raw} is a fact of {other.subject}, not of {subject}")
            return None
        return (other.type, other.unit)
    fact = builtin_fact(raw)
    if fact is None:
        bad(which, f"unknown fact {_show(raw)}")
        return None
    if subject and not is_visible(raw, subject):
        bad(which, f"{raw} is not a fact a {subject} sees")
        return None
    unit = "count" if fact.unit == "count" else fact.unit
    return (fact.type, unit)


def _filter(raw: object, related: RelatedSet, where: str, bad: Callable[[str, str], None]) -> Filter | None:
    if not isinstance(raw, Mapping) or set(raw) - {"field", "op", "value"}:
        bad(where, "a filter is {field, op, value}")
        return None
    name, op, value = raw.get("field"), raw.get("op"), raw.get("value")
    set_field = related.fields.get(name) if isinstance(name, str) else None
    if set_field is None:
        bad(
            f"{where}.field",
            f"{_show(name)} is not a field of {related.label}; choose from {', '.join(related.fields)}",
        )
        return None
    valid = FILTER_OPS[set_field.type]
    if op not in valid:
        bad(
            f"{where}.op",
            f"{_show(op)} does not apply to {set_field.name} ({set_field.type.value}); "
            f"valid: {', '.join(valid)}",
        )
        return None
    fact = _field_fact(set_field)
    try:
        if op in ("is_null", "is"):
            if not isinstance(value, bool):
                raise _Invalid(f"{op!r} takes true or false, got {_kind(value)} {_show(value)}")
            coerced: Any = value
        elif op in ("in", "not_in"):
            if not isinstance(value, list | tuple) or not value or len(value) > MAX_LIST:
                raise _Invalid(f"{op!r} takes a list of 1 to {MAX_LIST} values, got {_kind(value)}")
            coerced = tuple(dict.fromkeys(_RULE_VALUE[set_field.type](v, fact) for v in value))
        else:
            coerced = _RULE_VALUE[set_field.type](value, fact)
    except _Invalid as exc:
        bad(f"{where}.value", str(exc).replace("field.", ""))
        return None
    return Filter(set_field.name, str(op), coerced)


def find_cycle(defs: Mapping[str, Definition]) -> list[str]:
    """A cycle among the definitions' operands (``[a, b, a]``), or ``[]``."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for operand in defs[name].operands:
            if operand not in defs:
                continue
            if state.get(operand) == 1:
                return [*path[path.index(operand) :], operand]
            if operand not in state and (found := visit(operand)):
                return found
        path.pop()
        state[name] = 2
        return []

    for name in sorted(defs):
        if name not in state and (found := visit(name)):
            return found
    return []


def load_definitions(specs: Iterable[tuple[Mapping[str, Any], int]]) -> dict[str, Definition]:
    """Definitions from stored specs (each with its version), in dependency order; a spec that no longer
    validates is left out (with it, everything that reads it)."""
    pending = {PREFIX + str(spec.get("key")): (spec, version) for spec, version in specs}
    done: dict[str, Definition] = {}
    progress = True
    while pending and progress:
        progress = False
        for name, (spec, version) in list(pending.items()):
            needs = [str(spec.get(k)) for k in ("a", "b") if str(spec.get(k) or "").startswith(PREFIX)]
            if any(n in pending for n in needs):
                continue
            del pending[name]
            progress = True
            try:
                done[name] = parse_definition(spec, others=done, version=version)
            except DefinitionError:
                continue
    return done


def install(defs: Mapping[str, Definition]) -> None:
    """Make these definitions the ``custom.*`` facts of the catalogue (rules, the evaluator, wording)."""
    register_custom_facts([d.as_fact() for d in defs.values()], definitions=defs)


def definitions() -> dict[str, Definition]:
    """The installed definitions, by name."""
    from apps.rules.engine.catalogue import custom_definitions

    return dict(custom_definitions())


def order(defs: Mapping[str, Definition], names: Iterable[str] | None = None) -> list[Definition]:
    """``names`` (all by default) and every custom fact they read, operands first."""
    wanted = list(defs) if names is None else [n for n in names if n in defs]
    out: list[Definition] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in defs:
            return
        seen.add(name)
        for operand in defs[name].operands:
            visit(operand)
        out.append(defs[name])

    for name in sorted(wanted):
        visit(name)
    return out


# --------------------------------------------------------------------------------------------------
# The Python computation (one subject at a time).


def _holds(f: Filter, value: Any) -> bool:
    if f.op == "is_null":
        return (value is None) is bool(f.value)
    if value is None:
        return False  # as SQL: a comparison with NULL is not true
    if f.op == "is":
        return value is f.value
    v = f.value
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        value = Decimal(value)
        v = tuple(Decimal(x) for x in v) if isinstance(v, tuple) else Decimal(v)
    if f.op == "eq":
        return bool(value == v)
    if f.op == "ne":
        return bool(value != v)
    if f.op == "gt":
        return bool(value > v)
    if f.op == "gte":
        return bool(value >= v)
    if f.op == "lt":
        return bool(value < v)
    if f.op == "lte":
        return bool(value <= v)
    if f.op == "in":
        return value in v
    if f.op == "not_in":
        return value not in v
    raise AssertionError(f.op)


def _round(value: Decimal) -> Decimal:
    return value.quantize(_PLACES, rounding=ROUND_HALF_UP)


def window_bounds(definition: Definition, now: dt.datetime, today: dt.date) -> tuple[Any, Any] | None:
    """The window as (since, until): timestamps for a datetime column, dates for a date column."""
    if definition.window is None:
        return None
    related = RELATED_SETS[definition.related]
    if related.window_datetime:
        return (now - definition.window, now)
    return (today - dt.timedelta(days=definition.window.days), today)


def aggregate_rows(
    definition: Definition, rows: Iterable[Mapping[str, Any]], *, now: dt.datetime, today: dt.date
) -> Any:
    """The aggregate over one subject's rows (each a mapping of the set's fetched columns)."""
    related = RELATED_SETS[definition.related]
    fields = related.fields
    bounds = window_bounds(definition, now, today)
    window_column = related.window_field
    values: list[Any] = []
    count = 0
    reader = fields[definition.field].python if definition.field else None
    for row in rows:
        if bounds is not None:
            stamp = row[window_column]
            if stamp is None or not bounds[0] <= stamp <= bounds[1]:
                continue
        if not all(_holds(f, fields[f.field].python(row)) for f in definition.filters):
            continue
        if reader is None:
            count += 1
            continue
        value = reader(row)
        if value is not None:
            values.append(value)
    function = definition.function
    if function == "count":
        return count if reader is None else len(values)
    if function == "sum":
        return sum(values, Decimal(0) if definition.type is not FactType.INT else 0)
    if not values:
        return None
    if function == "min":
        return min(values)
    if function == "max":
        return max(values)
    return _round(sum(values, Decimal(0)) / len(values))


def combine(definition: Definition, a: Any, b: Any) -> Any:
    """A ratio or difference of two operand values (null in, null out)."""
    if a is None or b is None:
        return None
    if definition.kind == "difference":
        return a - b
    if b == 0:
        return None
    return _round(Decimal(a) / Decimal(b) * 100)


def inputs(
    definition: Definition, defs: Mapping[str, Definition], builtin: Mapping[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """The canonical entities the fact is computed from (its age is the oldest of theirs)."""
    if definition.kind == "aggregate":
        return (RELATED_SETS[definition.related].entity,)
    found: list[str] = []
    for operand in definition.operands:
        other = defs.get(operand)
        found += inputs(other, defs, builtin) if other is not None else builtin.get(operand, ())
    return tuple(dict.fromkeys(found))


def fetch_columns(definition: Definition) -> tuple[str, ...]:
    """The columns of the set's table the Python computation reads."""
    related = RELATED_SETS[definition.related]
    names: list[str] = [related.window_field]
    used = [definition.field] if definition.field else []
    used += [f.field for f in definition.filters]
    for name in used:
        names.extend(related.fields[name].columns)
    return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------------
# The SQL computation (every subject at once).


_AGG_SQL: Final = {"count": "COUNT", "sum": "SUM", "min": "MIN", "max": "MAX", "avg": "AVG"}
_CAST: Final = {
    FactType.MONEY: "numeric", FactType.PERCENT: "numeric", FactType.INT: "bigint", FactType.TEXT: "text",
    FactType.BOOL: "boolean", FactType.DATE: "date",
}  # fmt: skip
_COMPARE: Final = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass
class SqlParams:
    """Named parameters (pyformat, as the facts query)."""

    prefix: str
    values: dict[str, Any] = field(default_factory=dict)

    def add(self, value: object) -> str:
        name = f"{self.prefix}{len(self.values)}"
        self.values[name] = value
        return f"%({name})s"


def _filter_sql(f: Filter, set_field: SetField, params: SqlParams) -> str:
    col = set_field.sql
    cast = _CAST[set_field.type]
    if f.op == "is_null":
        return f"({col} IS NULL)" if f.value else f"({col} IS NOT NULL)"
    if f.op == "is":
        return f"({col} = {params.add(bool(f.value))}::boolean)"
    if f.op in ("in", "not_in"):
        test = "= ANY" if f.op == "in" else "<> ALL"
        return f"({col} {test}({params.add(list(f.value))}::{cast}[]))"
    return f"({col} {_COMPARE[f.op]} {params.add(f.value)}::{cast})"


@dataclass(frozen=True)
class AggregateJoin:
    """One aggregate as a grouped subquery joined on the subject's key: ``LEFT JOIN (...) alias ON``."""

    sql: str
    value: str  # the column expression of the fact's value


def aggregate_join(
    definition: Definition,
    alias: str,
    subject_alias: str,
    params: SqlParams,
    *,
    now: dt.datetime,
    today: dt.date,
    ids_param: str | None,
) -> AggregateJoin:
    """The grouped subquery computing ``definition`` for every subject (or only those of ``ids_param``,
    a bound array of subject ids)."""
    related = RELATED_SETS[definition.related]
    key = subject_key(related.name, definition.subject)
    assert key is not None
    joins = ""
    where = ["r.deleted_at IS NULL"]
    if key.via_project:
        joins = f" JOIN entities_project rp ON rp.id = r.{related.project_column} AND rp.deleted_at IS NULL"
    bounds = window_bounds(definition, now, today)
    if bounds is not None:
        cast = "timestamptz" if related.window_datetime else "date"
        column_sql = f"r.{related.window_field}"
        where.append(
            f"{column_sql} BETWEEN {params.add(bounds[0])}::{cast} AND {params.add(bounds[1])}::{cast}"
        )
    for f in definition.filters:
        where.append(_filter_sql(f, related.fields[f.field], params))
    if ids_param is not None:
        where.append(
            f"{key.rows} IN (SELECT t.{key.subject} FROM {key.table} t WHERE t.id = ANY({ids_param}))"  # noqa: S608
        )
    if definition.field:
        set_field = related.fields[definition.field]
        argument = set_field.sql
        if definition.function == "count":
            argument = f"CASE WHEN {argument} IS NOT NULL THEN 1 END"
    else:
        argument = "*"
    aggregate = f"{_AGG_SQL[definition.function]}({argument})"
    if definition.function == "avg":
        aggregate = f"ROUND({aggregate}, 4)"
    # Identifiers from the whitelist above; every value went through ``params``.
    sql = (
        f"LEFT JOIN (SELECT {key.rows} AS k, {aggregate} AS v FROM {related.table} r{joins}"  # noqa: S608
        f" WHERE {' AND '.join(where)} GROUP BY 1) {alias} ON {alias}.k = {subject_alias}.{key.subject}"
    )
    value = f"{alias}.v"
    if definition.function in ("count", "sum"):
        value = f"COALESCE({alias}.v, 0)"
    return AggregateJoin(sql, value)


def combined_sql(definition: Definition, a: str, b: str) -> str:
    """A ratio or difference over two operand expressions."""
    if definition.kind == "difference":
        return f"({a} - {b})"
    return f"ROUND(({a})::numeric / NULLIF(({b})::numeric, 0) * 100, 4)"


_FACT_NAME: Final = re.compile(r"[a-z][a-z_]*\.[a-z][a-z0-9_]*")


def quoted(name: str) -> str:
    """A fact name as a quoted column alias (names are whitelisted: catalogue or validated keys)."""
    if not _FACT_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a fact name")
    return f'"{name}"'


__all__ = [
    "FUNCTIONS",
    "KINDS",
    "RELATED_SETS",
    "SUBJECT_KEYS",
    "Definition",
    "DefinitionError",
    "Filter",
    "RelatedSet",
    "SetField",
    "SubjectKey",
    "aggregate_rows",
    "combine",
    "custom_fact",
    "find_cycle",
    "install",
    "load_definitions",
    "order",
    "parse_definition",
    "register_related_set",
    "register_subject_key",
]
