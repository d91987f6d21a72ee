"""The evaluator's words: values with their units, operators as phrases, ages (no Django)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Final

from .catalogue import Fact, FactType
from .values import _plain_decimal, _show


def _num(value: object, fact: Fact, *, threshold: bool) -> str:
    """A value without its unit. Thresholds of percentages read as written (12%), readings to one decimal."""
    if value is None:
        return "no data"
    if isinstance(value, bool):
        return "true" if value else "false"
    if fact.type is FactType.MONEY and isinstance(value, Decimal | int):
        return f"{value:,.2f}"
    if fact.type is FactType.PERCENT and isinstance(value, Decimal | int):
        if threshold:
            return f"{_plain_decimal(Decimal(value))}%"
        return f"{value:.1f}%"
    if isinstance(value, Decimal):
        return _plain_decimal(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return _show(value)


def _with_unit(value: object, fact: Fact, *, threshold: bool) -> str:
    text = _num(value, fact, threshold=threshold)
    if value is None or isinstance(value, bool):
        return text
    if fact.unit == "USD":
        return f"{text} USD"
    if fact.unit == "days" and isinstance(value, int):
        return f"{text} day" if abs(value) == 1 else f"{text} days"
    return text


def _listing(values: Sequence[object], fact: Fact, *, unit: bool) -> str:
    show = _with_unit if unit else _num
    return ", ".join(show(v, fact, threshold=True) for v in values)


_SYMBOLS: Final = {"eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}
# Each operator as the phrase before a threshold ("at least $50,000"): explanations and emails.
OPERATOR_PHRASES: Final = {
    "eq": "equal to",
    "ne": "not equal to",
    "gt": "more than",
    "gte": "at least",
    "lt": "less than",
    "lte": "at most",
    "between": "between",
    "in": "one of",
    "not_in": "none of",
    "is": "is",
    "is_null": "empty:",
    "contains": "containing",
}
_PHRASES: Final = {op: OPERATOR_PHRASES[op] for op in _SYMBOLS}


def _age_text(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"
