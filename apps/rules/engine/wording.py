"""Fulcrum's words for values: the one formatter behind pages, emails, admin and API text (no Django).

Every fact value people read passes here: ``$60,000.00``, ``11.5%``, ``1 day``, ``2 milestones``, ``yes``,
``no data``. A reading compared with a threshold is shown with as many decimals as it takes for the shown
comparison to be true of the shown numbers: 11.99 against 12 reads ``11.99% is below 12%``, never
``12.0% < 12%``. Sentences (:func:`sentence`) say one condition the way a person would: ``Margin 9.0% is
below 12%``, ``the client missed its last milestone``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final

from apps.rules.engine.catalogue import FACTS, Fact, FactType, words_of
from apps.rules.engine.values import _plain_decimal, _show

NO_DATA: Final = "no data"
_NUMERIC: Final = (FactType.MONEY, FactType.PERCENT, FactType.INT, FactType.SCORE)
# Readings shown to this many decimals at least (thresholds are shown as written).
_READING_PLACES: Final = {FactType.MONEY: 2, FactType.PERCENT: 1, FactType.INT: 0, FactType.SCORE: 2}
_MAX_PLACES: Final = 12


@dataclass(frozen=True, slots=True)
class Shape:
    """What the formatter needs to know of a fact: its type, unit, words for the unit and a label."""

    type: FactType | None
    unit: str = ""
    unit_words: tuple[str, str] = ("", "")
    label: str = ""
    says: tuple[str, str] = ("", "")
    # A text fact's choices and their words: ("at_risk", "At risk"), …
    choices: tuple[tuple[str, str], ...] = ()
    # What a count of it is, singular and plural ("missed milestone", "missed milestones").
    counted: tuple[str, str] = ("", "")

    def unit_for(self, count: object) -> str:
        one, many = self.unit_words
        try:
            single: bool = abs(count) == 1  # type: ignore[arg-type]
        except TypeError:
            single = False
        return one if single else many


_UNIT_WORDS: Final = {"days": ("day", "days"), "day": ("day", "days"), "hours": ("hour", "hours")}


def shape_of(fact: Fact | Shape | str | None = None, kind: str = "", unit: str = "") -> Shape:
    """The shape of a catalogued fact (by name or object), else one built from a type and a unit as a
    decision snapshot records them. A ``count`` unit says nothing "3" does not: it is dropped."""
    if isinstance(fact, Shape):
        return fact
    if isinstance(fact, str):
        name = fact
        fact = FACTS.get(fact)
        if fact is None:
            attribute = name.partition(".")[2] or name
            return _loose(kind, unit, words_of(attribute))
    if isinstance(fact, Fact):
        return _fact_shape(fact)
    return _loose(kind, unit, "")


# Fact id -> (the fact, its shape). A Fact is frozen, so its shape never changes; the fact is kept beside
# it so that an id reused after an operator-defined fact was replaced cannot match. Every value a trace
# explains and every sentence of a summary asks for its fact's shape (a first run traces 33k pairs).
_SHAPES: dict[int, tuple[Fact, Shape]] = {}


def _fact_shape(fact: Fact) -> Shape:
    cached = _SHAPES.get(id(fact))
    if cached is not None and cached[0] is fact:
        return cached[1]
    choices = tuple(zip(fact.choices, fact.choice_words, strict=True))
    shape = Shape(fact.type, fact.unit, fact.unit_words, fact.label, fact.says, choices, fact.counted)
    if len(_SHAPES) > 1024:  # custom facts re-installed many times over: start again
        _SHAPES.clear()
    _SHAPES[id(fact)] = (fact, shape)
    return shape


# Texts already made: (function, shape id, its other arguments) keys -> (shape, text). Every text
# here is a pure function of its arguments, and a trace asks for the same ones again and again: a fact's
# reading once for the explanation and once for the summary of the same evaluation, a rule's threshold for
# every subject, "Change order status is pending" for thousands of them (a first run of 50 rules traces 33k
# pairs). The shape is kept with its text, so its id cannot be reused while the key exists.
_MADE: dict[tuple[Any, ...], tuple[Shape, str]] = {}
_MADE_LIMIT: Final = 20_000
# Values a text may be remembered by: their type and themselves, or their exact text where two equal
# values can read differently (Decimal("-0") == Decimal("0"); 1.0 == 1).
_BY_VALUE: Final = (str, int, bool, type(None))
_BY_TEXT: Final = (Decimal, float, date)


class _Unkeyed(Exception):
    """A value a text is not remembered by (lists, other types): the text is made afresh."""


def _key(value: object) -> tuple[type, object]:
    kind = type(value)
    if kind in _BY_VALUE:
        return kind, value
    if kind in _BY_TEXT:
        return kind, str(value)
    raise _Unkeyed


def _made(make: Callable[..., str], shape: Shape, *args: object) -> str:
    """``make(shape, *args)``, remembered by the shape and the arguments (made afresh for unkeyed ones)."""
    try:
        key = (make, id(shape), *map(_key, args))
    except _Unkeyed:
        return make(shape, *args)
    made = _MADE.get(key)
    if made is not None:
        return made[1]
    text = make(shape, *args)
    if len(_MADE) >= _MADE_LIMIT:
        _MADE.clear()
    _MADE[key] = (shape, text)
    return text


def _loose(kind: str, unit: str, label: str) -> Shape:
    try:
        fact_type: FactType | None = FactType(kind)
    except ValueError:
        fact_type = {"number": FactType.INT, "float": FactType.PERCENT, "decimal": FactType.MONEY}.get(kind)
    words = _UNIT_WORDS.get(unit, ("", ""))
    return Shape(fact_type, "" if unit == "count" else unit, words, label)


def _decimal(value: object) -> Decimal | None:
    kind = type(value)
    if kind is Decimal:  # the usual reading and threshold, first (the same as the general path below)
        return value if value.is_finite() else None  # type: ignore[attr-defined,return-value]
    if kind is int:
        return Decimal(value)  # type: ignore[arg-type]
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


_QUANTA: Final = tuple(Decimal(1).scaleb(-places) for places in range(_MAX_PLACES + 1))


def _rounded(number: Decimal, places: int) -> Decimal:
    quantum = _QUANTA[places] if 0 <= places <= _MAX_PLACES else Decimal(1).scaleb(-places)
    return number.quantize(quantum, rounding=ROUND_HALF_UP)


def _grouped(number: Decimal, places: int) -> str:
    """``1234.5`` → ``1,234.50`` (places ≥ 0), rounded half up."""
    return f"{_rounded(number, places):,.{places}f}"


def _places_of(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _number(number: Decimal, shape: Shape, places: int) -> str:
    """A number in its unit: ``$60,000.00``, ``11.5%``, ``45 days``, ``60,000.00 EUR``."""
    if shape.type is FactType.MONEY:
        text = _grouped(abs(number), places)
        sign = "-" if number < 0 and text.strip("0.,") else ""
        return f"{sign}${text}" if shape.unit in ("USD", "") else f"{sign}{text} {shape.unit}"
    text = _grouped(number, places)
    if shape.type is FactType.PERCENT:
        return f"{text}%"
    words = shape.unit_for(number) if shape.unit_words != ("", "") else shape.unit
    return f"{text} {words}".strip()


def _plain_places(number: Decimal, shape: Shape) -> int:
    """Decimals of a threshold as written: ``12%``, ``60 days``; money always in cents (``$50,000.00``),
    the one style its readings have, so an amount and its threshold read alike."""
    places = _places_of(number)
    if shape.type is FactType.MONEY:
        return max(2, places)
    return places


def _typed(value: object, shape: Shape) -> Any:
    """A value as the evaluator compares it: numbers as Decimal, dates as dates, the rest as given."""
    if shape.type in _NUMERIC:
        return _decimal(value)
    if shape.type is FactType.DATE and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value


def _holds(op: str, actual: Any, expected: Any) -> bool | None:
    """The comparison on these values (None when it cannot be made on them)."""
    try:
        if op == "eq":
            return bool(actual == expected)
        if op == "ne":
            return bool(actual != expected)
        if op == "gt":
            return bool(actual > expected)
        if op == "gte":
            return bool(actual >= expected)
        if op == "lt":
            return bool(actual < expected)
        if op == "lte":
            return bool(actual <= expected)
        if op == "between":
            low, high = expected
            return bool(low <= actual <= high)
        if op in ("in", "not_in"):
            inside = actual in list(expected)
            return inside if op == "in" else not inside
    except (TypeError, ValueError):
        return None
    return None


def _expected_numbers(expected: object, shape: Shape) -> Any:
    if isinstance(expected, list | tuple):
        return tuple(_decimal(v) for v in expected)
    return _decimal(expected)


def reading_places(actual: Decimal, shape: Shape, op: str = "", expected: object = None) -> int:
    """How many decimals a reading needs: its usual ones, more when rounding would make the shown
    comparison with the threshold say something false of the shown numbers (11.99 vs 12)."""
    places = _READING_PLACES.get(shape.type, 0) if shape.type else 0
    if shape.type is FactType.INT and actual != actual.to_integral_value():
        places = _places_of(actual)
    if not op or expected is None:
        return places
    exact = max(places, _places_of(actual))
    if exact <= places:  # no more decimals than shown: the shown number is the number
        return places
    numbers = _expected_numbers(expected, shape)
    truth = _holds(op, actual, numbers)
    if truth is None:
        return places
    while places < min(exact, _MAX_PLACES):
        if _holds(op, _rounded(actual, places), numbers) == truth:
            return places
        places += 1
    return places


def reading(
    value: object,
    fact: Fact | Shape | str | None = None,
    *,
    op: str = "",
    expected: object = None,
    kind: str = "",
    unit: str = "",
) -> str:
    """A fact's value as read: ``$49,999.99``, ``11.99%``, ``1 day``, ``yes``, ``no data``. With ``op`` and
    ``expected`` (the rule's threshold), precise enough that the shown comparison is true."""
    return _made(_reading, shape_of(fact, kind, unit), value, op, expected)


def _reading(shape: Shape, value: object, op: str, expected: object) -> str:
    if value is None or value == "":
        return NO_DATA
    if isinstance(value, list | tuple):
        return ", ".join(reading(v, shape) for v in value)
    if isinstance(value, bool) or shape.type is FactType.BOOL:
        return {"true": "yes", "false": "no"}.get(str(value).lower(), str(value))
    if shape.type in _NUMERIC:
        number = _decimal(value)
        if number is None:
            return _text(value)
        return _number(number, shape, reading_places(number, shape, op, expected))
    if shape.type is FactType.DATE:
        return _date(_typed(value, shape))
    if shape.type is None:
        number = _decimal(value) if isinstance(value, int | Decimal) else None
        if number is not None:
            return _number(number, shape, _places_of(number))
    return _words(value, shape)


def written(value: object, fact: Fact | Shape | str | None = None, *, kind: str = "", unit: str = "") -> str:
    """A rule's value as written, in its unit: ``12%``, ``$50,000.00``, ``60 days``, ``yes``."""
    return _made(_written, shape_of(fact, kind, unit), value)


def _written(shape: Shape, value: object) -> str:
    if value is None or value == "":
        return NO_DATA
    if isinstance(value, list | tuple):
        return ", ".join(written(v, shape) for v in value)
    if isinstance(value, bool) or shape.type is FactType.BOOL:
        return {"true": "yes", "false": "no"}.get(str(value).lower(), str(value))
    if shape.type in _NUMERIC or shape.type is None:
        number = _decimal(value) if shape.type or isinstance(value, int | Decimal) else None
        if number is not None:
            return _number(number, shape, _plain_places(number, shape))
    if shape.type is FactType.DATE:
        return _date(_typed(value, shape))
    return _words(value, shape)


def _words(value: object, shape: Shape) -> str:
    """A text value as read: a catalogued choice in its words (``at_risk`` → ``At risk``), the rest as is."""
    if shape.choices and isinstance(value, str):
        for choice, words in shape.choices:
            if value == choice:
                return words
    return _text(value)


def _date(value: object) -> str:
    if isinstance(value, date):
        return f"{value:%b} {value.day}, {value.year}"
    return _text(value)


def _text(value: object) -> str:
    return value if isinstance(value, str) else _show(value)


# Each comparison as said when it holds and when it does not.
_SAID: Final = {
    "eq": ("equals", "does not equal"),
    "ne": ("does not equal", "equals"),
    "gt": ("is above", "is not above"),
    "gte": ("is at least", "is below"),
    "lt": ("is below", "is not below"),
    "lte": ("is at most", "is above"),
    "between": ("is between", "is not between"),
    "in": ("is one of", "is none of"),
    "not_in": ("is none of", "is one of"),
    "contains": ("contains", "does not contain"),
}


def sentence(
    fact: Fact | Shape | str | None,
    op: str,
    expected: object,
    actual: object,
    result: str,
    *,
    kind: str = "",
    unit: str = "",
) -> str:
    """One condition as a sentence: ``Margin 9.0% is below 12%``. ``result`` is the condition's result
    as the evaluator recorded it (``true``, ``false``, ``unknown``, ``error``; a reason such as
    ``stale`` also reads as unknown)."""
    return _made(_sentence, shape_of(fact, kind, unit), op, expected, actual, result)


def _sentence(shape: Shape, op: str, expected: object, actual: object, result: str) -> str:
    label = shape.label or "The value"
    if result not in ("true", "false"):
        if result == "stale":
            return f"{label}: its data is too old to decide on"
        if result == "error":
            return f"{label} could not be compared"
        return f"{label}: {NO_DATA}"
    held = result == "true"
    if op == "is_null":
        empty = held == bool(expected)
        return f"{label} has no data" if empty else f"{label} has data ({reading(actual, shape)})"
    if actual is None:
        return f"{label}: {NO_DATA}"
    if op == "is" or shape.type is FactType.BOOL:
        value = str(actual).lower() == "true" if not isinstance(actual, bool) else actual
        said = shape.says[0 if value else 1]
        return said[:1].upper() + said[1:] if said else f"{label}: {reading(value, shape)}"
    if shape.type is FactType.TEXT and shape.choices:
        chosen = _chosen(label, shape, op, expected, actual, held)
        if chosen:
            return chosen
    if shape.type is FactType.TEXT and op in ("eq", "ne"):
        # Free text (an AI tool's own class names): the value once, quoted, not "x equals x".
        if held == (op == "eq"):
            return f"{label} is “{_text(actual)}”"
        return f"{label} is “{_text(actual)}”, not “{_text(expected)}”"
    if shape.type is FactType.INT and (shape.counted[1] or shape.unit_words[1]):
        counted = _counted(label, shape, op, expected, actual, held)
        if counted:
            return counted
    shown_actual = reading(actual, shape, op=op, expected=expected)
    words = _SAID.get(op, (op, f"not {op}"))[0 if held else 1]
    if op == "between" and isinstance(expected, list | tuple) and len(expected) == 2:
        low, high = (written(v, shape) for v in expected)
        return f"{label} {shown_actual} {words} {low} and {high}"
    if op in ("in", "not_in") and isinstance(expected, list | tuple):
        return f"{label} {shown_actual} {words} {', '.join(written(v, shape) for v in expected)}"
    if op == "contains":
        return f"{label} “{_text(actual)}” {words} “{_text(expected)}”"
    return f"{label} {shown_actual} {words} {written(expected, shape)}"


def _in_sentence(value: object, shape: Shape) -> str:
    """A choice's words inside a sentence (``at risk``); any other value as it came (synced text keeps its
    capitals)."""
    words = _words(value, shape)
    return words[:1].lower() + words[1:] if words != _text(value) else words


def _chosen(label: str, shape: Shape, op: str, expected: object, actual: object, held: bool) -> str:
    """A text fact with choices, in its words: ``Schedule status is at risk, not on track``, ``Change
    order status is void (none of draft, pending)``; empty when the comparison is not one of these."""
    shown = _in_sentence(actual, shape)
    if op in ("eq", "ne"):
        if held == (op == "eq"):
            return f"{label} is {shown}"
        return f"{label} is {shown}, not {_in_sentence(expected, shape)}"
    if op in ("in", "not_in") and isinstance(expected, list | tuple):
        inside = held == (op == "in")
        listed = ", ".join(_in_sentence(v, shape) for v in expected)
        return f"{label} is {shown} ({'one of' if inside else 'none of'} {listed})"
    return ""


# Each comparison of a count as said before its threshold, when it holds and when it does not:
# "2 missed milestones (more than 0)".
_COUNT_SAID: Final = {
    "eq": ("exactly", "not"),
    "ne": ("not", "exactly"),
    "gt": ("more than", "not more than"),
    "gte": ("at least", "less than"),
    "lt": ("less than", "not less than"),
    "lte": ("at most", "more than"),
    "between": ("between", "not between"),
    "in": ("one of", "none of"),
    "not_in": ("none of", "one of"),
}


def _bare(value: object) -> str:
    """A count's threshold without its unit (the sentence says it once): ``60``, ``1,000``, ``2.5``."""
    number = _decimal(value)
    return _text(value) if number is None else _grouped(number, _places_of(number))


def _counted(label: str, shape: Shape, op: str, expected: object, actual: object, held: bool) -> str:
    """A count with its unit said once, the way a person writes it: ``2 missed milestones (more than 0)``,
    ``1 day to renewal (at most 60)``; without words for what it counts, ``Change order age: 45 days, at
    least 30``. The reading as precise as the comparison needs; empty when not a count."""
    number = _decimal(actual)
    said = _COUNT_SAID.get(op)
    if number is None or said is None:
        return ""
    places = reading_places(number, shape, op, expected)
    shown = _rounded(number, places)
    words = said[0 if held else 1]
    if op == "between":
        if not isinstance(expected, list | tuple) or len(expected) != 2:
            return ""
        threshold = f"{_bare(expected[0])} and {_bare(expected[1])}"
    elif op in ("in", "not_in"):
        if not isinstance(expected, list | tuple):
            return ""
        threshold = ", ".join(_bare(v) for v in expected)
    else:
        threshold = _bare(expected)
    if not shape.counted[1]:
        return f"{label}: {_number(number, shape, places)}, {words} {threshold}"
    noun = shape.counted[0 if abs(shown) == 1 and places == 0 else 1]
    return f"{_grouped(number, places)} {noun} ({words} {threshold})"


def sentences(parts: Sequence[str]) -> str:
    """Sentences joined into one line, the first capitalised: ``Margin 9.0% is below 12%; the client …``."""
    text = "; ".join(p for p in parts if p)
    return text[:1].upper() + text[1:]


# --- the evaluator's trace texts (admin, preview, decision records) -----------------------------------


def _num(value: object, fact: Fact, *, threshold: bool) -> str:
    """A value without a unit word, for formulas: thresholds as written, readings in their usual form."""
    if value is None:
        return NO_DATA
    if isinstance(value, bool):
        return "true" if value else "false"
    if fact.type in _NUMERIC and isinstance(value, Decimal | int):
        number = Decimal(value)
        shape = shape_of(fact)
        places = _plain_places(number, shape) if threshold else reading_places(number, shape)
        return _number(number, Shape(fact.type, "", ("", ""), "", ("", "")), places)
    if isinstance(value, Decimal):
        return _plain_decimal(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return _show(value)


def _with_unit(value: object, fact: Fact, *, threshold: bool, op: str = "", expected: object = None) -> str:
    if value is None or isinstance(value, bool):
        return _num(value, fact, threshold=threshold)
    if isinstance(value, Decimal | int) and fact.type in _NUMERIC:
        if threshold:
            return written(value, fact)
        return reading(value, fact, op=op, expected=expected)
    return _num(value, fact, threshold=threshold)


def _listing(values: Sequence[object], fact: Fact, *, unit: bool) -> str:
    show = _with_unit if unit else _num
    return ", ".join(show(v, fact, threshold=True) for v in values)


_SYMBOLS: Final = {"eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}
# Each operator as the phrase before a threshold ("at least $50,000.00"): explanations and emails.
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


# --- a decision's conditions, as people read them ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a recorded decision in words; ``held`` says whether it counted toward the match
    (a false condition under ``not`` holds)."""

    fact: str
    label: str
    meaning: str
    sentence: str
    actual: str
    expected: str
    op: str
    result: str
    held: bool


def conditions(evidence: object) -> list[Condition]:
    """The leaf conditions of a decision's evidence (``facts`` and ``explanation`` as the escalation
    stores them), each with its sentence and whether it held."""
    if not isinstance(evidence, dict):
        return []
    facts = evidence.get("facts") or {}
    found: list[Condition] = []
    for node in evidence.get("explanation") or []:
        if not isinstance(node, dict) or not node.get("fact"):
            continue
        name = str(node["fact"])
        meta = facts.get(name) if isinstance(facts, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        shape = shape_of(name, str(meta.get("type") or ""), str(meta.get("unit") or ""))
        op, expected, actual = str(node.get("op") or ""), node.get("expected"), node.get("actual")
        result = str(node.get("result") or "")
        said = "stale" if node.get("reason") == "stale" else result
        negated = str(node.get("path") or "").count(".not") % 2 == 1
        catalogued = FACTS.get(name)
        said_text = sentence(shape, op, expected, actual, said)
        other = node.get("other")
        if isinstance(other, str) and other:
            # A fact compared with another fact: ``expected`` is the other fact's value.
            other_meta = facts.get(other) if isinstance(facts, dict) else None
            other_meta = other_meta if isinstance(other_meta, dict) else {}
            other_shape = shape_of(
                other, str(other_meta.get("type") or ""), str(other_meta.get("unit") or "")
            )
            said_text = pair_sentence(shape, op, other_shape, actual, expected, said)
            shown, threshold = pair_shown(shape, op, other_shape, actual, expected)
        else:
            threshold = written(expected, shape)
            shown = reading(actual, shape, op=op, expected=expected)
        found.append(
            Condition(
                fact=name,
                label=shape.label,
                meaning=catalogued.plain if catalogued else "",
                sentence=said_text,
                actual=shown,
                expected=threshold,
                op=op,
                result=result,
                held=(result == "true") != negated and result in ("true", "false"),
            )
        )
    return found


# A comparison seen from its other side (``a > b`` is ``b < a``).
_MIRRORED: Final = {"gt": "lt", "gte": "lte", "lt": "gt", "lte": "gte", "eq": "eq", "ne": "ne"}


def pair_readings(
    fact: Fact | Shape | str | None, op: str, other: Fact | Shape | str | None, a: object, b: object
) -> tuple[str, str]:
    """Both values of a fact compared with another fact, each read as a fact's value is (the other side is
    a reading too, never a threshold as written: ``$120,000.00`` against ``$100,000.00``), each as precise
    as the comparison needs."""
    first, second = shape_of(fact), shape_of(other)
    mirrored = _MIRRORED.get(op, "")
    x, y = _decimal(a), _decimal(b)
    if first.type in _NUMERIC and second.type in _NUMERIC and x is not None and y is not None:
        # One precision for both sides: "12.04% is above 12.01%", never "12.04% is above 12.0%".
        places = max(reading_places(x, first, op, y), reading_places(y, second, mirrored, x))
        return _number(x, first, places), _number(y, second, places)
    return reading(a, first, op=op, expected=b if mirrored else None), reading(
        b, second, op=mirrored, expected=a if mirrored else None
    )


def pair_shown(shape: Shape, op: str, other: Shape, actual: object, expected: object) -> tuple[str, str]:
    """A fact compared with another fact, as a table row shows it: its value, and as the threshold the
    other fact with its value, read alike (``$120,000.00``, ``Income to date ($100,000.00)``)."""
    left, right = pair_readings(shape, op, other, actual, expected)
    return left, f"{other.label or 'The other value'} ({right})"


def pair_sentence(shape: Shape, op: str, other: Shape, actual: object, expected: object, result: str) -> str:
    """A fact compared with another: ``Cost to date $120.00 is above Income to date $100.00``."""
    if result not in ("true", "false") or actual is None or expected is None:
        return sentence(shape, op, None, None, result if result in ("stale", "error") else "unknown")
    words = _SAID.get(op, (op, f"not {op}"))[0 if result == "true" else 1]
    label, other_label = shape.label or "The value", other.label or "the other value"
    left, right = pair_readings(shape, op, other, actual, expected)
    return f"{label} {left} {words} {other_label} {right}"


def why(evidence: object, fallback: str = "") -> str:
    """The conditions that held, as one line of sentences (``fallback`` when none were recorded)."""
    held = [c.sentence for c in conditions(evidence) if c.held]
    return sentences(held) if held else fallback
