"""Compile a rule's condition tree once, evaluate it many times, and say why.

A condition is a leaf ``{fact, op, value}`` or a group ``{all: [...]}``, ``{any: [...]}``, ``{not: node}``.
:func:`compile_condition` validates the whole tree against the fact catalogue, reports every problem at
once with its path, coerces the rule's values once (``Decimal`` for money, never floats) and builds a tree
of slotted nodes. Evaluation uses three-valued (Kleene) logic: a ``null`` or stale fact makes its leaf
*unknown*, never silently false (ANCHORS, Rules 4). A value of the wrong type in the context makes its leaf
an *error*, which combines like *unknown* (so a branch that cannot change the result does not matter) but
outranks it, so the outcome is ``error`` rather than ``insufficient_data`` when it decides.

There are two ways to run a compiled condition and they always agree on the outcome:
:meth:`CompiledCondition.evaluate` visits every node and keeps a trace for the explanation (the decision
record, ANCHORS Rules 6); :meth:`CompiledCondition.matches` short-circuits, for batch runs and backtests.

Rules never run code: no ``eval``/``exec``, no attribute lookups or regexes built from rule text;
``contains`` is a plain case-insensitive substring test. No Django imports: this module is tested without
a database.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any, Final, TypeAlias

from apps.rules.engine.catalogue import (
    CUSTOM_PREFIX,
    FACTS,
    OPERATORS,
    SUBJECT_TYPES,
    VISIBLE,
    Fact,
    is_visible,
    operators_for,
)
from apps.rules.engine.durations import format_duration
from apps.rules.engine.values import (
    _CONTEXT_VALUE,
    _RULE_VALUE,
    _BadContext,
    _expected_json,
    _Invalid,
    _jsonable,
    _kind,
    _LeafValue,
    _rule_text,
    _RuleValue,
    _show,
    _tree_value,
)
from apps.rules.engine.wording import (
    _PHRASES,
    _SYMBOLS,
    _age_text,
    _listing,
    _num,
    _with_unit,
    pair_readings,
    pair_sentence,
    sentence,
    sentences,
    shape_of,
)

MAX_DEPTH: Final = 10
MAX_CONDITIONS: Final = 200
MAX_LIST_ITEMS: Final = 500

# Truth values as small ints so that combining children is a max(): FALSE < TRUE < UNKNOWN < ERROR.
# In ``all`` a FALSE child decides; otherwise the worst of TRUE/UNKNOWN/ERROR wins. In ``any`` a TRUE
# child decides; otherwise the worst of FALSE/UNKNOWN/ERROR wins. ERROR is "unknown because the data is
# of the wrong type", so it is absorbed exactly where UNKNOWN is.
_F: Final = 0
_T: Final = 1
_U: Final = 2
_E: Final = 3
_NOT: Final = (_T, _F, _U, _E)
_RESULT: Final = ("false", "true", "unknown", "unknown")
_VERDICT: Final = ("false", "true", "insufficient data", "error")

GROUPS: Final = ("all", "any", "not")


class Verdict(StrEnum):
    MATCHED = "matched"
    NOT_MATCHED = "not_matched"
    INSUFFICIENT_DATA = "insufficient_data"
    ERROR = "error"


_OUTCOMES: Final = (Verdict.NOT_MATCHED, Verdict.MATCHED, Verdict.INSUFFICIENT_DATA, Verdict.ERROR)


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One problem in a rule: where (a path such as ``when.all[2].value``, and a line in a file) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        if self.path:
            where.append(self.path)
        return ": ".join([*where, self.message])


class RuleValidationError(ValueError):
    """A condition tree with problems; ``errors`` lists all of them, in tree order."""

    def __init__(self, errors: Sequence[RuleProblem]) -> None:
        self.errors: list[RuleProblem] = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


# --------------------------------------------------------------------------------------------------
# The compiled tree.

# One entry per node, in tree order: (truth, actual value, reason, age in seconds).
_Trace: TypeAlias = tuple[int, object, str, object]
_Facts: TypeAlias = Mapping[str, object]
_Ages: TypeAlias = Mapping[str, Any] | None
_GROUP_TRACE_CACHE: Final = {truth: (truth, None, "", None) for truth in (_F, _T, _U, _E)}


class _Node:
    __slots__ = ("depth", "index", "path")

    def __init__(self, index: int, path: str, depth: int) -> None:
        self.index = index
        self.path = path
        self.depth = depth

    def fast(self, facts: _Facts, ages: _Ages, max_s: float | None) -> int:
        raise NotImplementedError

    def full(self, facts: _Facts, ages: _Ages, max_s: float | None, trace: list[_Trace]) -> int:
        raise NotImplementedError

    def tree(self) -> dict[str, Any]:
        raise NotImplementedError


class _Leaf(_Node):
    __slots__ = (
        "coerce", "expected", "fact", "formula", "name", "op", "phrase", "test", "value", "when_null",
        "when_present",
    )  # fmt: skip

    def __init__(
        self,
        index: int,
        path: str,
        depth: int,
        fact: Fact,
        op: str,
        value: _LeafValue,
    ) -> None:
        super().__init__(index, path, depth)
        self.fact = fact
        self.name = fact.name
        self.op = op
        self.value = value
        self.coerce = _CONTEXT_VALUE[fact.type]
        self.test = _make_test(op, value)
        # The rule's side of the explanation never changes; render it once.
        self.expected = _expected_json(value)
        self.phrase = _phrase(fact, op, value)
        self.formula = _formula(fact, op, value)
        # is_null answers from presence alone; every other operator is unknown on null.
        if op == "is_null":
            self.when_null = _T if value else _F
            self.when_present: int | None = _F if value else _T
        else:
            self.when_null = _U
            self.when_present = None

    def fast(self, facts: _Facts, ages: _Ages, max_s: float | None) -> int:
        if max_s is not None:
            age = ages.get(self.name) if ages is not None else None
            try:
                fresh = age is not None and bool(age <= max_s)
            except TypeError:
                fresh = False
            if not fresh:
                return _U
        raw = facts.get(self.name)
        if raw is None:
            return self.when_null
        if self.when_present is not None:
            return self.when_present
        try:
            actual = self.coerce(raw, self.fact)
        except _BadContext:
            return _E
        return _T if self.test(actual) else _F

    def full(self, facts: _Facts, ages: _Ages, max_s: float | None, trace: list[_Trace]) -> int:
        raw = facts.get(self.name)
        age: Any = None
        if max_s is not None:
            # A missing or unreadable age is unknown, and unknown is not fresh (NaN fails <= too).
            age = ages.get(self.name) if ages is not None else None
            try:
                fresh = age is not None and bool(age <= max_s)
            except TypeError:
                fresh = False
            if not fresh:
                trace[self.index] = (_U, raw, "stale", age)
                return _U
        if raw is None:
            truth = self.when_null
            trace[self.index] = (truth, None, "null", age)
            return truth
        if self.when_present is not None:
            truth = self.when_present
            trace[self.index] = (truth, raw, "", age)
            return truth
        try:
            actual = self.coerce(raw, self.fact)
        except _BadContext as exc:
            trace[self.index] = (_E, raw, str(exc), age)
            return _E
        truth = _T if self.test(actual) else _F
        trace[self.index] = (truth, actual, "", age)
        return truth

    def tree(self) -> dict[str, Any]:
        return {"fact": self.name, "op": self.op, "value": _tree_value(self.value)}

    def said(self, actual: object, result: str) -> str:
        """The leaf as a sentence, for summaries."""
        return sentence(self.fact, self.op, self.value, actual, result)

    def compact(self, actual: object) -> str:
        """``project.margin_pct 9.0% < 12%``: the leaf as a formula, for summaries."""
        if self.op == "is":
            return f"{self.name} is {self.formula}"
        if self.op == "is_null":
            if self.value:
                return f"{self.name} has no data"
            return f"{self.name} has data ({_num(actual, self.fact, threshold=False)})"
        return f"{self.name} {_num(actual, self.fact, threshold=False)} {self.formula}"


COMPARE_OPS: Final = ("eq", "ne", "gt", "gte", "lt", "lte")


class _Compare(_Leaf):
    """A fact compared with another fact: ``{fact: a, op: gt, other: b}``. Unknown when either is null
    or stale; an error when either has a value of the wrong type."""

    __slots__ = ("other", "other_name", "pair_test")

    def __init__(self, index: int, path: str, depth: int, fact: Fact, op: str, other: Fact) -> None:
        _Node.__init__(self, index, path, depth)
        self.fact = fact
        self.name = fact.name
        self.op = op
        self.other = other
        self.other_name = other.name
        self.value = other.name
        self.coerce = _CONTEXT_VALUE[fact.type]
        self.test = _make_test("eq", "")  # unused: a comparison tests a pair
        self.pair_test = _make_pair_test(op)
        self.expected = None
        self.phrase = f"{_PHRASES.get(op, op)} {other.name}"
        self.formula = f"{_SYMBOLS.get(op, op)} {other.name}"
        self.when_null = _U
        self.when_present = None

    def _fresh(self, ages: _Ages, max_s: float) -> tuple[bool, Any]:
        oldest: Any = None
        for name in (self.name, self.other_name):
            age = ages.get(name) if ages is not None else None
            try:
                if age is None or not bool(age <= max_s):
                    return False, age
            except TypeError:
                return False, age
            oldest = age if oldest is None else max(oldest, age)
        return True, oldest

    def fast(self, facts: _Facts, ages: _Ages, max_s: float | None) -> int:
        if max_s is not None and not self._fresh(ages, max_s)[0]:
            return _U
        a, b = facts.get(self.name), facts.get(self.other_name)
        if a is None or b is None:
            return _U
        try:
            return (
                _T
                if self.pair_test(self.coerce(a, self.fact), _CONTEXT_VALUE[self.other.type](b, self.other))
                else _F
            )
        except _BadContext:
            return _E

    def full(self, facts: _Facts, ages: _Ages, max_s: float | None, trace: list[_Trace]) -> int:
        a, b = facts.get(self.name), facts.get(self.other_name)
        age: Any = None
        if max_s is not None:
            fresh, age = self._fresh(ages, max_s)
            if not fresh:
                trace[self.index] = (_U, (a, b), "stale", age)
                return _U
        if a is None or b is None:
            trace[self.index] = (_U, (a, b), "null", age)
            return _U
        try:
            pair = (self.coerce(a, self.fact), _CONTEXT_VALUE[self.other.type](b, self.other))
        except _BadContext as exc:
            trace[self.index] = (_E, (a, b), str(exc), age)
            return _E
        truth = _T if self.pair_test(*pair) else _F
        trace[self.index] = (truth, pair, "", age)
        return truth

    def tree(self) -> dict[str, Any]:
        return {"fact": self.name, "op": self.op, "other": self.other_name}

    def said(self, actual: object, result: str) -> str:
        a, b = actual if isinstance(actual, tuple) else (None, None)
        return compare_sentence(self.fact, self.op, self.other, a, b, result)

    def compact(self, actual: object) -> str:
        a, b = actual if isinstance(actual, tuple) else (None, None)
        return (
            f"{self.name} {_num(a, self.fact, threshold=False)} {_SYMBOLS.get(self.op, self.op)} "
            f"{self.other_name} {_num(b, self.other, threshold=False)}"
        )


def compare_sentence(fact: Fact, op: str, other: Fact, a: object, b: object, result: str) -> str:
    """``Cost to date $120,000.00 is above Income to date $100,000.00``: the words pages and emails say
    (:func:`wording.pair_sentence`); a missing value is said of the fact that has none."""
    if result not in ("true", "false") or a is None or b is None:
        missing = fact if a is None or b is not None else other
        return sentence(missing, "eq", None, None, result if result in ("stale", "error") else "unknown")
    return pair_sentence(shape_of(fact), op, shape_of(other), a, b, result)


def _make_pair_test(op: str) -> Callable[[Any, Any], bool]:
    if op == "eq":
        return lambda a, b: bool(a == b)
    if op == "ne":
        return lambda a, b: bool(a != b)
    if op == "gt":
        return lambda a, b: bool(a > b)
    if op == "gte":
        return lambda a, b: bool(a >= b)
    if op == "lt":
        return lambda a, b: bool(a < b)
    if op == "lte":
        return lambda a, b: bool(a <= b)
    raise AssertionError(op)


def _phrase(fact: Fact, op: str, value: _LeafValue) -> str:
    """What the leaf expects, in words: ``at least 50,000.00 USD``."""
    if op in _PHRASES:
        return f"{_PHRASES[op]} {_with_unit(value, fact, threshold=True)}"
    if op == "between":
        assert isinstance(value, tuple)
        shown = [_with_unit(v, fact, threshold=True) for v in value]
        return f"between {shown[0]} and {shown[1]}"
    if op in ("in", "not_in"):
        assert isinstance(value, tuple)
        return f"{'one' if op == 'in' else 'none'} of {_listing(value, fact, unit=True)}"
    if op == "is":
        return f"expected {_num(value, fact, threshold=True)}"
    if op == "is_null":
        return "expected no data" if value else "expected a value"
    if op == "contains":
        return f"containing {value!r}"
    raise AssertionError(op)


def _formula(fact: Fact, op: str, value: _LeafValue) -> str:
    """What follows the reading in a summary: ``≥ 50,000.00``, ``in [draft, pending]``."""
    if op in _SYMBOLS:
        return f"{_SYMBOLS[op]} {_num(value, fact, threshold=True)}"
    if op == "between":
        assert isinstance(value, tuple)
        low, high = (_num(v, fact, threshold=True) for v in value)
        return f"between {low} and {high}"
    if op in ("in", "not_in"):
        assert isinstance(value, tuple)
        return f"{'in' if op == 'in' else 'not in'} [{_listing(value, fact, unit=False)}]"
    if op == "contains":
        return f"contains {value!r}"
    return _num(value, fact, threshold=True)  # is, is_null: true/false


def _make_test(op: str, value: _LeafValue) -> Callable[[Any], bool]:
    # Context values are coerced to the rule value's type first, so these comparisons never mix types.
    v: Any = value
    if op == "eq":
        return lambda a: bool(a == v)
    if op == "ne":
        return lambda a: bool(a != v)
    if op == "gt":
        return lambda a: bool(a > v)
    if op == "gte":
        return lambda a: bool(a >= v)
    if op == "lt":
        return lambda a: bool(a < v)
    if op == "lte":
        return lambda a: bool(a <= v)
    if op == "between":
        low, high = v
        return lambda a: bool(low <= a <= high)
    if op == "in":
        members = frozenset(v)
        return lambda a: a in members
    if op == "not_in":
        members = frozenset(v)
        return lambda a: a not in members
    if op == "is":
        return lambda a: a is v
    if op == "contains":
        needle = str(v).casefold()
        return lambda a: needle in a.casefold()
    if op == "is_null":
        return lambda a: False  # never called: is_null is decided by presence
    raise AssertionError(op)


class _All(_Node):
    __slots__ = ("children",)

    def __init__(self, index: int, path: str, depth: int, children: list[_Node]) -> None:
        super().__init__(index, path, depth)
        self.children = tuple(children)

    # Kleene logic: one `decisive` child decides the group; otherwise the worst of the rest, starting
    # from `neutral` (all: F decides, start at T; any: T decides, start at F).
    key = "all"
    decisive = _F
    neutral = _T

    def fast(self, facts: _Facts, ages: _Ages, max_s: float | None) -> int:
        decisive = self.decisive
        worst = self.neutral
        for child in self.children:
            truth = child.fast(facts, ages, max_s)
            if truth == decisive:
                return decisive
            if truth > worst:
                worst = truth
        return worst

    def full(self, facts: _Facts, ages: _Ages, max_s: float | None, trace: list[_Trace]) -> int:
        decisive = self.decisive
        worst = self.neutral
        decided = False
        for child in self.children:  # no short-circuit: every condition gets its explanation
            truth = child.full(facts, ages, max_s, trace)
            if truth == decisive:
                decided = True
            elif truth > worst:
                worst = truth
        result = decisive if decided else worst
        trace[self.index] = _GROUP_TRACE_CACHE[result]
        return result

    def tree(self) -> dict[str, Any]:
        return {self.key: [c.tree() for c in self.children]}


class _Any(_All):
    __slots__ = ()
    key = "any"
    decisive = _T
    neutral = _F


class _Not(_Node):
    __slots__ = ("child",)

    def __init__(self, index: int, path: str, depth: int, child: _Node) -> None:
        super().__init__(index, path, depth)
        self.child = child

    def fast(self, facts: _Facts, ages: _Ages, max_s: float | None) -> int:
        return _NOT[self.child.fast(facts, ages, max_s)]

    def full(self, facts: _Facts, ages: _Ages, max_s: float | None, trace: list[_Trace]) -> int:
        result = _NOT[self.child.full(facts, ages, max_s, trace)]
        trace[self.index] = _GROUP_TRACE_CACHE[result]
        return result

    def tree(self) -> dict[str, Any]:
        return {"not": self.child.tree()}


def _children(node: _Node) -> tuple[_Node, ...]:
    if isinstance(node, _All):
        return node.children
    if isinstance(node, _Not):
        return (node.child,)
    return ()


# --------------------------------------------------------------------------------------------------
# Results.


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """One node of an evaluation's explanation. Values are JSON-safe (Decimal → string, date → ISO)."""

    path: str
    fact: str  # "" for groups
    op: str  # the operator, or "all" / "any" / "not"
    expected: Any
    actual: Any
    result: str  # "true" | "false" | "unknown"
    reason: str  # "" | "null" | "stale" | what was wrong with the context value
    text: str
    depth: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "fact": self.fact,
            "op": self.op,
            "expected": self.expected,
            "actual": self.actual,
            "result": self.result,
            "reason": self.reason,
            "text": self.text,
            "depth": self.depth,
        }


_RESULT_FIELDS = tuple(f.name for f in dataclass_fields(ConditionResult))


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one evaluation, with a trace that becomes the explanation when asked for.

    The explanation and summary are built on first use: a batch run that keeps only the outcome of a
    non-match pays for neither.
    """

    outcome: Verdict
    error: str
    trace: tuple[_Trace, ...] = field(repr=False)
    condition: CompiledCondition = field(repr=False, compare=False)
    max_age: timedelta | None = field(default=None, repr=False)

    @property
    def matched(self) -> bool:
        return self.outcome is Verdict.MATCHED

    @cached_property
    def explanation(self) -> list[ConditionResult]:
        """One result per condition, in tree order (a group before its children)."""
        return [ConditionResult(*parts) for parts in self._explained]

    @cached_property
    def _explained(self) -> list[tuple[Any, ...]]:
        """The explanation's fields, in ConditionResult's order (its JSON is built from these: a first
        run traces 33k evaluations)."""
        return [self._explain(node) for node in self.condition._nodes]

    def _explain(self, node: _Node) -> tuple[Any, ...]:
        truth, actual, reason, age = self.trace[node.index]
        if not isinstance(node, _Leaf):
            if isinstance(node, _All):
                count = len(node.children)
                noun = "condition" if count == 1 else "conditions"
                op = "any" if isinstance(node, _Any) else "all"
                text = f"{op} of {count} {noun} — {_VERDICT[truth]}"
            else:
                op = "not"
                text = f"not (the condition below) — {_VERDICT[truth]}"
            return (node.path, "", op, None, None, _RESULT[truth], "", text, node.depth - 1)
        fact = node.fact
        if isinstance(node, _Compare):
            return self._explain_compare(node, truth, actual, reason, age)
        if reason == "stale":
            limit = format_duration(self.max_age) if self.max_age else "?"
            if isinstance(age, int | float) and math.isfinite(age):
                old = f"its data is {_age_text(float(age))} old"
            else:
                old = "the age of its data is unknown"
            if actual is None:
                text = f"{node.name} is unknown: {old} (limit {limit}) — insufficient data"
            else:
                shown = _with_unit(actual, fact, threshold=False)
                text = f"{node.name} is {shown}, but {old} (limit {limit}) — insufficient data"
        elif reason == "null" and truth == _U:
            text = f"{node.name} is unknown (no data) — insufficient data"
        elif reason == "null":
            text = f"{node.name} has no data, {node.phrase} — {_VERDICT[truth]}"
        elif truth == _E:
            text = f"{node.name} cannot be compared: {reason} — error"
        else:
            shown = _with_unit(actual, fact, threshold=False, op=node.op, expected=node.value)
            text = f"{node.name} is {shown}, {node.phrase} — {_VERDICT[truth]}"
        return (
            node.path,
            node.name,
            node.op,
            node.expected,
            _jsonable(actual),
            _RESULT[truth],
            reason,
            text + _definition_note(fact, actual),
            node.depth - 1,
        )

    def _explain_compare(
        self, node: _Compare, truth: int, actual: Any, reason: str, age: Any
    ) -> tuple[Any, ...]:
        a, b = actual if isinstance(actual, tuple) else (None, None)
        if reason == "stale":
            text = f"{node.name} or {node.other_name} is too old to decide on — insufficient data"
        elif reason == "null":
            missing = node.name if a is None else node.other_name
            text = f"{missing} is unknown (no data) — insufficient data"
        elif truth == _E:
            text = f"{node.name} cannot be compared with {node.other_name}: {reason} — error"
        else:
            left, right = pair_readings(node.fact, node.op, node.other, a, b)
            phrase = _PHRASES.get(node.op, node.op)
            text = f"{node.name} is {left}, {phrase} {node.other_name} ({right}) — {_VERDICT[truth]}"
        text += _definition_note(node.fact, a) + _definition_note(node.other, b)
        return (
            node.path,
            node.name,
            node.op,
            _jsonable(b),
            _jsonable(a),
            _RESULT[truth],
            reason,
            text,
            node.depth - 1,
        )

    def deciding_leaves(self) -> list[tuple[_Leaf, int]]:
        """The leaves that decided the outcome, each with the truth value it contributed.

        For a match: the true leaves of every ``all`` and the true children of an ``any`` (inside a
        ``not``, the false ones). For a non-match: the mirror image. For unknown or error: the leaves
        that made it so.
        """
        # An explicit stack, not a recursive closure: a closure that calls itself is a reference cycle
        # holding the whole evaluation until the garbage collector runs (33k of them in a first run of
        # 50 rules made its collections cost 1.4 s).
        found: list[tuple[_Leaf, int]] = []
        trace = self.trace
        root = self.condition._root
        stack: list[tuple[_Node, int]] = [(root, trace[root.index][0])]
        while stack:
            node, want = stack.pop()
            if trace[node.index][0] != want:
                continue
            if isinstance(node, _Leaf):
                found.append((node, want))
            elif isinstance(node, _Not):
                stack.append((node.child, _NOT[want]))
            else:
                stack.extend((child, want) for child in reversed(_children(node)))  # in tree order
        return found

    def summary(self) -> str:
        """One line of sentences: the conditions that decided, e.g. ``Change order amount $60,000.00 is at
        least $50,000; Margin 9.0% is below 12%``."""
        parts: list[str] = []
        for leaf, want in self.deciding_leaves():
            _, actual, reason, _ = self.trace[leaf.index]
            result = "stale" if reason == "stale" else _RESULT[want] if want in (_T, _F) else "unknown"
            if want == _E:
                result = "error"
            parts.append(leaf.said(actual, result))
        text = sentences(parts)
        if self.outcome is Verdict.MATCHED:
            return text
        if self.outcome is Verdict.NOT_MATCHED:
            return f"not matched: {text}"
        if self.outcome is Verdict.INSUFFICIENT_DATA:
            return f"insufficient data: {text}"
        return f"error: {text}"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "error": self.error,
            "summary": self.summary(),
            "explanation": [
                _with_other(dict(zip(_RESULT_FIELDS, parts, strict=True)), node)
                for parts, node in zip(self._explained, self.condition._nodes, strict=True)
            ],
        }


def _with_other(entry: dict[str, Any], node: _Node) -> dict[str, Any]:
    """A fact-vs-fact condition's entry also names the other fact (its value is ``expected``)."""
    if isinstance(node, _Compare):
        entry["other"] = node.other_name
    return entry


def _definition_note(fact: Fact, actual: object) -> str:
    """An operator-defined fact is shown with its label, definition and version: ``; custom.co_count_30d
    (Pending change orders) = 4 — count of change orders in the last 30 days where status = pending (v2)``."""
    if not fact.name.startswith(CUSTOM_PREFIX):
        return ""
    shown = _with_unit(actual, fact, threshold=False) if actual is not None else "no data"
    return f"; {fact.name} ({fact.label}) = {shown} — {fact.description} (v{fact.version})"


class CompiledCondition:
    """A validated condition tree, ready to evaluate. Build with :func:`compile_condition`."""

    __slots__ = ("_nodes", "_root", "_size", "facts", "leaf_count", "subject_type")

    def __init__(self, root: _Node, nodes: list[_Node], subject_type: str) -> None:
        self._root = root
        self._nodes = tuple(nodes)
        self._size = len(nodes)
        self.subject_type = subject_type
        leaves = [n for n in nodes if isinstance(n, _Leaf)]
        self.leaf_count = len(leaves)
        self.facts: frozenset[str] = frozenset(
            [n.name for n in leaves] + [n.other_name for n in leaves if isinstance(n, _Compare)]
        )

    def evaluate(
        self,
        facts: Mapping[str, object],
        *,
        ages: Mapping[str, Any] | None = None,
        max_age: timedelta | None = None,
    ) -> Evaluation:
        """Evaluate every node (no short-circuit) and keep the trace for the explanation.

        ``facts`` maps fact names to values (a missing name counts as null). ``ages`` maps fact names to
        the age in seconds of the fact's newest input; with ``max_age`` set, a fact of unknown age or
        older than ``max_age`` makes its conditions unknown ("stale"). Never raises for bad context data:
        a value of the wrong type makes its leaf an error.
        """
        max_s = None if max_age is None else max_age.total_seconds()
        trace: list[_Trace] = [_GROUP_TRACE_CACHE[_U]] * self._size
        truth = self._root.full(facts, ages, max_s, trace)
        error = ""
        if truth == _E:
            error = next(
                f"{node.name}: {entry[2]}"
                for node, entry in zip(self._nodes, trace, strict=True)
                if isinstance(node, _Leaf) and entry[0] == _E
            )
        return Evaluation(_OUTCOMES[truth], error, tuple(trace), self, max_age)

    def matches(
        self,
        facts: Mapping[str, object],
        *,
        ages: Mapping[str, Any] | None = None,
        max_age: timedelta | None = None,
    ) -> Verdict:
        """The same outcome as :meth:`evaluate`, short-circuiting and without a trace (batch, backtest)."""
        max_s = None if max_age is None else max_age.total_seconds()
        return _OUTCOMES[self._root.fast(facts, ages, max_s)]

    def to_tree(self) -> dict[str, Any]:
        """The canonical tree: JSON-safe, ``not`` takes one node, stable for hashing and diffing."""
        return self._root.tree()

    def walk(self) -> Iterator[tuple[str, str, str, Any]]:
        """``(path, fact, op, value)`` for every leaf with a value (not fact-vs-fact), in tree order, with
        JSON-safe values."""
        for node in self._nodes:
            if isinstance(node, _Leaf) and not isinstance(node, _Compare):
                yield node.path, node.name, node.op, _tree_value(node.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompiledCondition):
            return NotImplemented
        return self.subject_type == other.subject_type and self.to_tree() == other.to_tree()

    def __hash__(self) -> int:
        return hash((self.subject_type, repr(self.to_tree())))

    def __repr__(self) -> str:
        return f"<CompiledCondition {self.subject_type} {self.leaf_count} conditions>"


# --------------------------------------------------------------------------------------------------
# Compilation.


class _Compiler:
    def __init__(self, subject_type: str | None) -> None:
        self.subject_type = subject_type
        self.errors: list[RuleProblem] = []
        self.nodes: list[_Node] = []
        self.leaves = 0

    def problem(self, path: str, message: str) -> None:
        self.errors.append(RuleProblem(path, message))

    def node(self, raw: object, path: str, canonical: str, depth: int) -> _Node | None:
        if depth > MAX_DEPTH:
            self.problem(path, f"conditions are nested more than {MAX_DEPTH} levels deep")
            return None
        if not isinstance(raw, Mapping):
            self.problem(
                path,
                f"expected a condition ({{fact, op, value}}) or a group (all, any, not), got {_kind(raw)}",
            )
            return None
        groups = [key for key in GROUPS if key in raw]
        if not groups:
            return self.leaf(raw, path, canonical, depth)
        if len(groups) > 1:
            self.problem(path, f"a group has exactly one of all, any, not; found {', '.join(groups)}")
        for key in raw:
            if key not in GROUPS:
                self.problem(f"{path}.{key}", f"unexpected key {_show(key)} in a group ({groups[0]})")
        kind = groups[0]
        index = len(self.nodes)
        self.nodes.append(_Node(index, canonical, depth))  # placeholder, keeps tree order
        body = raw[kind]
        built: _Node | None
        if kind == "not":
            if isinstance(body, list):
                if len(body) != 1:
                    self.problem(f"{path}.not", f"'not' takes one condition, got a list of {len(body)}")
                    return None
                child = self.node(body[0], f"{path}.not[0]", f"{canonical}.not", depth + 1)
            else:
                child = self.node(body, f"{path}.not", f"{canonical}.not", depth + 1)
            built = _Not(index, canonical, depth, child) if child is not None else None
        else:
            if not isinstance(body, list) or not body:
                what = "an empty list" if isinstance(body, list) else _kind(body)
                self.problem(f"{path}.{kind}", f"'{kind}' takes a non-empty list of conditions, got {what}")
                return None
            children = [
                self.node(item, f"{path}.{kind}[{i}]", f"{canonical}.{kind}[{i}]", depth + 1)
                for i, item in enumerate(body)
            ]
            ok = [c for c in children if c is not None]
            cls = _All if kind == "all" else _Any
            built = cls(index, canonical, depth, ok) if len(ok) == len(children) else None
        if built is not None:
            self.nodes[index] = built
        return built

    def leaf(self, raw: Mapping[Any, Any], path: str, canonical: str, depth: int) -> _Node | None:
        self.leaves += 1
        index = len(self.nodes)
        self.nodes.append(_Node(index, canonical, depth))
        ok = True
        if "other" in raw:
            return self.compare(raw, path, canonical, depth, index)
        for key in raw:
            if key not in ("fact", "op", "value"):
                self.problem(
                    f"{path}.{key}",
                    f"unexpected key {_show(key)}; a condition has fact, op and value "
                    "(or is a group: all, any, not)",
                )
                ok = False
        for key in ("fact", "op", "value"):
            if key not in raw:
                self.problem(f"{path}.{key}", f"missing {key!r}")
                ok = False
        fact = self.fact(raw.get("fact"), f"{path}.fact") if "fact" in raw else None
        op = self.op(raw.get("op"), fact, f"{path}.op") if "op" in raw else None
        if fact is None or op is None or "value" not in raw:
            return None
        value = self.value(raw["value"], fact, op, f"{path}.value")
        if value is None or not ok:
            return None
        leaf = _Leaf(index, canonical, depth, fact, op, value)
        self.nodes[index] = leaf
        return leaf

    def compare(
        self, raw: Mapping[Any, Any], path: str, canonical: str, depth: int, index: int
    ) -> _Node | None:
        ok = True
        for key in raw:
            if key not in ("fact", "op", "other"):
                self.problem(
                    f"{path}.{key}",
                    f"unexpected key {_show(key)}; a comparison of two facts has fact, op and other",
                )
                ok = False
        for key in ("fact", "op"):
            if key not in raw:
                self.problem(f"{path}.{key}", f"missing {key!r}")
                ok = False
        fact = self.fact(raw.get("fact"), f"{path}.fact") if "fact" in raw else None
        other = self.fact(raw.get("other"), f"{path}.other")
        op = raw.get("op")
        if "op" in raw and op not in COMPARE_OPS:
            self.problem(
                f"{path}.op", f"{_show(op)} cannot compare two facts; use one of {', '.join(COMPARE_OPS)}"
            )
            ok = False
        if fact is None or other is None or not ok:
            return None
        if fact.name == other.name:
            self.problem(f"{path}.other", f"{fact.name} is compared with itself")
            return None
        if fact.type != other.type or (fact.unit or "") != (other.unit or ""):
            self.problem(
                f"{path}.other",
                f"{fact.name} ({fact.type.value}{', ' + fact.unit if fact.unit else ''}) cannot be compared "
                f"with {other.name} ({other.type.value}{', ' + other.unit if other.unit else ''}): "
                "they need one type and unit",
            )
            return None
        if op not in operators_for(fact.type):
            self.problem(f"{path}.op", f"{op!r} does not apply to {fact.name}")
            return None
        leaf = _Compare(index, canonical, depth, fact, str(op), other)
        self.nodes[index] = leaf
        return leaf

    def fact(self, raw: object, path: str) -> Fact | None:
        if not isinstance(raw, str):
            self.problem(path, f"expected a fact name such as change_order.amount, got {_kind(raw)}")
            return None
        fact = FACTS.get(raw)
        if fact is None:
            candidates = list(FACTS)
            if self.subject_type in VISIBLE:
                prefixes = VISIBLE[self.subject_type]
                candidates = [n for n in FACTS if n.partition(".")[0] in prefixes]
            hint = difflib.get_close_matches(raw, candidates, n=1, cutoff=0.6)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            self.problem(path, f"unknown fact {_show(raw)}{suggestion}")
            return None
        if self.subject_type in VISIBLE and not is_visible(fact.name, self.subject_type):
            sees = ", ".join(f"{p}.*" for p in VISIBLE[self.subject_type])
            self.problem(path, f"{fact.name} is not available to a {self.subject_type} rule (it sees {sees})")
            return None
        return fact

    def op(self, raw: object, fact: Fact | None, path: str) -> str | None:
        valid = operators_for(fact.type) if fact is not None else OPERATORS
        scope = f"valid for {fact.type.value}" if fact is not None else "operators are"
        if not isinstance(raw, str) or raw not in OPERATORS:
            self.problem(path, f"{_show(raw)} is not an operator; {scope}: {', '.join(valid)}")
            return None
        if raw not in valid:
            assert fact is not None
            self.problem(path, f"{raw!r} does not apply to {fact.name}; {scope}: {', '.join(valid)}")
            return None
        return raw

    def value(self, raw: object, fact: Fact, op: str, path: str) -> _LeafValue | None:
        coerce = _RULE_VALUE[fact.type]
        try:
            if op in ("is_null", "is"):
                if not isinstance(raw, bool):
                    raise _Invalid(f"{op!r} takes true or false, got {_kind(raw)} {_show(raw)}")
                return raw
            if op == "contains":
                return _rule_text(raw, fact, choice=False)
            if op == "between":
                return self.between(raw, fact, coerce, path)
            if op in ("in", "not_in"):
                return self.members(raw, fact, op, coerce, path)
            return coerce(raw, fact)
        except _Invalid as exc:
            self.problem(path, str(exc))
            return None

    def between(
        self, raw: object, fact: Fact, coerce: Callable[[object, Fact], _RuleValue], path: str
    ) -> tuple[_RuleValue, ...] | None:
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            raise _Invalid(f"'between' takes [low, high], got {_kind(raw)} {_show(raw)}")
        bounds: list[_RuleValue] = []
        for i, item in enumerate(raw):
            try:
                bounds.append(coerce(item, fact))
            except _Invalid as exc:
                self.problem(f"{path}[{i}]", str(exc))
        if len(bounds) != 2:
            return None
        low, high = bounds
        if low > high:  # type: ignore[operator]  # both coerced by the same function
            raise _Invalid(f"'between' needs low ≤ high, got [{_show(raw[0])}, {_show(raw[1])}]")
        return (low, high)

    def members(
        self, raw: object, fact: Fact, op: str, coerce: Callable[[object, Fact], _RuleValue], path: str
    ) -> tuple[_RuleValue, ...] | None:
        if not isinstance(raw, list | tuple) or not raw:
            what = "an empty list" if isinstance(raw, list | tuple) else f"{_kind(raw)} {_show(raw)}"
            raise _Invalid(f"{op!r} takes a non-empty list, got {what}")
        if len(raw) > MAX_LIST_ITEMS:
            raise _Invalid(f"{op!r} takes at most {MAX_LIST_ITEMS} values, got {len(raw)}")
        items: list[_RuleValue] = []
        ok = True
        for i, item in enumerate(raw):
            try:
                value = coerce(item, fact)
            except _Invalid as exc:
                self.problem(f"{path}[{i}]", str(exc))
                ok = False
                continue
            if value not in items:
                items.append(value)
        return tuple(items) if ok else None


def validate_condition(tree: object, subject_type: str | None, *, path: str = "when") -> list[RuleProblem]:
    """Every problem in ``tree``; with ``subject_type`` None, fact visibility is not checked."""
    compiler = _Compiler(subject_type)
    _build(compiler, tree, path)
    return compiler.errors


def _build(compiler: _Compiler, tree: object, path: str) -> _Node | None:
    try:
        root = compiler.node(tree, path, path, 1)
    except RecursionError:  # the depth cap stops us long before; this guards odd Mapping types
        compiler.problem(path, "the condition is nested too deeply")
        return None
    if compiler.leaves > MAX_CONDITIONS:
        compiler.problem(path, f"too many conditions: {compiler.leaves} (at most {MAX_CONDITIONS})")
    return root


def compile_condition(tree: Mapping[str, Any], subject_type: str, *, path: str = "when") -> CompiledCondition:
    """Validate ``tree`` for a rule on ``subject_type`` and compile it.

    Raises :class:`RuleValidationError` listing every problem (paths start with ``path``).
    """
    if subject_type not in SUBJECT_TYPES:
        problems = [RuleProblem("subject", f"unknown subject type {_show(subject_type)}; choose from "
                                           f"{', '.join(SUBJECT_TYPES)}")]  # fmt: skip
        raise RuleValidationError(problems + validate_condition(tree, None, path=path))
    compiler = _Compiler(subject_type)
    root = _build(compiler, tree, path)
    if compiler.errors or root is None:
        raise RuleValidationError(compiler.errors or [RuleProblem(path, "invalid condition")])
    return CompiledCondition(root, compiler.nodes, subject_type)
