"""The values of rules and contexts: compile-time coercion of a rule's values to the fact's type,
run-time checks of a context's values, and their JSON forms (part of the evaluator; no Django)."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeAlias

from apps.rules.engine.catalogue import Fact, FactType

MAX_TEXT_LENGTH: Final = 500
# Rule values and context numbers beyond this are typos or junk, and would make huge formatted strings.
MAX_NUMBER: Final = Decimal(10) ** 15
MAX_DECIMAL_PLACES: Final = 6


class _Invalid(Exception):
    """A rule value that fails validation (collected, never escapes compile_condition)."""


class _BadContext(Exception):
    """A context value of the wrong type for its fact (becomes an ``error`` leaf)."""


def _show(raw: object) -> str:
    try:
        text = repr(raw)
    except Exception:  # a broken __repr__ must not break validation
        text = f"<{type(raw).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(raw: object) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true/false"
    if isinstance(raw, int):
        return "a whole number"
    if isinstance(raw, float | Decimal):
        return "a number"
    if isinstance(raw, str):
        return "text"
    if isinstance(raw, Mapping):
        return "a mapping"
    if isinstance(raw, list | tuple):
        return "a list"
    return type(raw).__name__


def _bounded(d: Decimal) -> Decimal:
    if not d.is_finite():
        raise _Invalid(f"{d} is not a finite number")
    if abs(d) >= MAX_NUMBER:
        raise _Invalid(f"{d} is too large (at most 15 digits before the decimal point)")
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
        raise _Invalid(f"{d} has too many decimal places (at most {MAX_DECIMAL_PLACES})")
    return d


def _rule_number(raw: object, fact: Fact) -> Decimal:
    if isinstance(raw, bool):
        raise _Invalid(f"{fact.name} is {fact.type.value}: expected a number, got {_kind(raw)} {_show(raw)}")
    if isinstance(raw, Decimal):
        return _bounded(raw)
    if isinstance(raw, int):
        return _bounded(Decimal(raw))
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise _Invalid(f"{fact.name} is {fact.type.value}: {raw} is not a finite number")
        return _bounded(Decimal(str(raw)))
    if isinstance(raw, str):
        try:
            return _bounded(Decimal(raw.strip()))
        except InvalidOperation:
            pass
    raise _Invalid(f"{fact.name} is {fact.type.value}: expected a number, got {_kind(raw)} {_show(raw)}")


def _rule_int(raw: object, fact: Fact) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if abs(raw) >= MAX_NUMBER:
            raise _Invalid(f"{raw} is too large")
        return int(raw)
    raise _Invalid(f"{fact.name} is a whole number: expected an integer, got {_kind(raw)} {_show(raw)}")


def _rule_bool(raw: object, fact: Fact) -> bool:
    if isinstance(raw, bool):
        return raw
    raise _Invalid(f"{fact.name} is true/false: expected true or false, got {_kind(raw)} {_show(raw)}")


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _rule_date(raw: object, fact: Fact) -> date:
    if isinstance(raw, datetime):
        raise _Invalid(f"{fact.name} is a date: expected YYYY-MM-DD, got a date and time {_show(raw)}")
    if isinstance(raw, date):
        return raw
    if isinstance(raw, str) and _ISO_DATE.fullmatch(raw):
        try:
            return date.fromisoformat(raw)
        except ValueError as exc:
            raise _Invalid(f"{raw!r} is not a valid date: {exc}") from None
    raise _Invalid(f"{fact.name} is a date: expected YYYY-MM-DD, got {_kind(raw)} {_show(raw)}")


def _rule_text(raw: object, fact: Fact, *, choice: bool = True) -> str:
    if not isinstance(raw, str):
        raise _Invalid(f"{fact.name} is text: expected a string, got {_kind(raw)} {_show(raw)}")
    if len(raw) > MAX_TEXT_LENGTH:
        raise _Invalid(f"text is too long ({len(raw)} characters, at most {MAX_TEXT_LENGTH})")
    if choice and fact.choices and raw not in fact.choices:
        hint = difflib.get_close_matches(raw, fact.choices, n=1)
        suggestion = f"did you mean {hint[0]!r}? " if hint else ""
        raise _Invalid(
            f"{_show(raw)} is not a {fact.name}; {suggestion}choose from {', '.join(fact.choices)}"
        )
    return str(raw)


_RuleValue: TypeAlias = Decimal | int | bool | str | date
_LeafValue: TypeAlias = _RuleValue | tuple[_RuleValue, ...]
_RULE_VALUE: Final[dict[FactType, Callable[[object, Fact], _RuleValue]]] = {
    FactType.MONEY: _rule_number,
    FactType.PERCENT: _rule_number,
    FactType.SCORE: _rule_number,
    FactType.INT: _rule_int,
    FactType.BOOL: _rule_bool,
    FactType.TEXT: _rule_text,
    FactType.DATE: _rule_date,
}


def _context_problem(raw: object, fact: Fact, expected: str) -> _BadContext:
    return _BadContext(f"expected {expected} for {fact.type.value}, got {type(raw).__name__} {_show(raw)}")


def _ctx_number(raw: object, fact: Fact) -> Decimal:
    kind = type(raw)
    if kind is Decimal:
        assert isinstance(raw, Decimal)
        if raw.is_finite():
            return raw
    elif kind is int:
        assert isinstance(raw, int)
        return Decimal(raw)
    elif kind is float:
        assert isinstance(raw, float)
        if math.isfinite(raw):
            return Decimal(str(raw))
    elif isinstance(raw, Decimal) and raw.is_finite():
        return Decimal(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        return Decimal(int(raw))
    raise _context_problem(raw, fact, "a finite number")


def _ctx_int(raw: object, fact: Fact) -> int:
    kind = type(raw)
    if kind is int:
        assert isinstance(raw, int)
        return raw
    if isinstance(raw, bool):
        raise _context_problem(raw, fact, "a whole number")
    if isinstance(raw, int):
        return int(raw)
    # Databases hand back integral aggregates as Decimal (SUM, COUNT over a CASE); those are fine.
    if isinstance(raw, Decimal) and raw.is_finite() and raw == raw.to_integral_value():
        return int(raw)
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    raise _context_problem(raw, fact, "a whole number")


def _ctx_bool(raw: object, fact: Fact) -> bool:
    if raw is True or raw is False:
        return raw
    raise _context_problem(raw, fact, "true or false")


def _ctx_text(raw: object, fact: Fact) -> str:
    if isinstance(raw, str):
        return str(raw)
    raise _context_problem(raw, fact, "text")


def _ctx_date(raw: object, fact: Fact) -> date:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    raise _context_problem(raw, fact, "a date")


_CtxValue: TypeAlias = Decimal | int | bool | str | date
_CONTEXT_VALUE: Final[dict[FactType, Callable[[object, Fact], _CtxValue]]] = {
    FactType.MONEY: _ctx_number,
    FactType.PERCENT: _ctx_number,
    FactType.SCORE: _ctx_number,
    FactType.INT: _ctx_int,
    FactType.BOOL: _ctx_bool,
    FactType.TEXT: _ctx_text,
    FactType.DATE: _ctx_date,
}


def _plain_decimal(d: Decimal) -> str:
    """``Decimal('12.50')`` → ``'12.5'``, ``Decimal('5E+4')`` → ``'50000'``: one spelling per number."""
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _jsonable(value: object) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:  # the usual readings, first
        return value
    if kind is Decimal:
        return str(value) if value.is_finite() else None  # type: ignore[attr-defined]
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | frozenset):
        return [_jsonable(v) for v in value]
    return _show(value)


def _tree_value(value: object) -> Any:
    """A rule value in the canonical tree: whole numbers as ints, other decimals as exact strings."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else _plain_decimal(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_tree_value(v) for v in value]
    return value


def _expected_json(value: object) -> Any:
    if isinstance(value, Decimal):
        return _plain_decimal(value)
    if isinstance(value, tuple):
        return [_expected_json(v) for v in value]
    return _jsonable(value)
