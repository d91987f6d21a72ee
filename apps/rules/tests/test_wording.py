"""The one formatter: every shown comparison is true of the shown numbers (no database).

A person reads "Margin 11.99% is below 12%" and checks it in their head; "12.0% < 12%" for 11.99 made
people distrust every line. The property below evaluates a condition with the real evaluator, renders
it the ways people see it (the escalation's one-line summary, the page's and email's sentence built from
the stored JSON), reads the numbers back from the words and checks the comparison the words state.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.rules.engine import catalogue
from apps.rules.engine.catalogue import FACTS, Fact, FactType
from apps.rules.engine.evaluator import compile_condition
from apps.rules.engine.wording import conditions, reading, sentence, written

DATE = Fact(
    "project.due_date", FactType.DATE, "", "the project's due date (test only)", "pm", label="Due date"
)
SUBJECT = {"change_order": "change_order", "project": "change_order", "client": "change_order"}
SUBJECT |= {"submittal": "submittal", "vendor": "submittal", "document": "document"}

# The words a sentence uses for each comparison, and what they claim (op, holds).
CLAIMS = {
    "equals": "eq",
    "does not equal": "ne",
    "is above": "gt",
    "is not above": "lte",
    "is at least": "gte",
    "is below": "lt",
    "is not below": "gte",
    "is at most": "lte",
}
_DELTAS = [Decimal(d) for d in ("0", "0.000001", "0.0004", "0.001", "0.004", "0.005", "0.0051", "0.01")]
_DELTAS += [Decimal(d) for d in ("0.049", "0.05", "0.051", "0.1", "0.5", "0.9999", "1", "37.5")]


def number_from(text: str) -> Decimal:
    """A number back from its words: ``-$1,234.50`` → -1234.50, ``11.99%`` → 11.99, ``3 days`` → 3."""
    match = re.fullmatch(r"(-?)\$?([\d,]+(?:\.\d+)?)(?:%| [a-z -]+)?", text)
    assert match, f"not a number in words: {text!r}"
    return Decimal(match.group(1) + match.group(2).replace(",", ""))


def date_from(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%b %d, %Y").date()  # noqa: DTZ007 - a date, no time


def holds(op: str, actual: Any, expected: Any) -> bool:
    return {
        "eq": actual == expected,
        "ne": actual != expected,
        "gt": actual > expected,
        "gte": actual >= expected,
        "lt": actual < expected,
        "lte": actual <= expected,
    }[op]


# The words a count's sentence puts before its threshold ("2 missed milestones (more than 0)").
COUNT_CLAIMS = {
    "exactly": "eq",
    "not": "ne",
    "more than": "gt",
    "not more than": "lte",
    "at least": "gte",
    "less than": "lt",
    "not less than": "gte",
    "at most": "lte",
}


def check_count(text: str, fact: Fact, op: str) -> None:
    """A count's sentence (``2 missed milestones (more than 0)``, ``Change order age: 45 days, at least
    30``) says its unit once, in agreement with the shown number, and the comparison in
    brackets is true of the shown numbers."""
    one, many = fact.counted if fact.counted[1] else fact.unit_words
    said = re.escape(one) + "|" + re.escape(many)
    if fact.counted[1]:
        match = re.fullmatch(rf"(-?[\d,]+(?:\.\d+)?) ({said}) \((.+)\)", text)
    else:  # "Change order age: 45 days, at least 30"
        match = re.fullmatch(rf"{re.escape(fact.label)}: (-?[\d,]+(?:\.\d+)?) ({said}), (.+)", text)
    assert match, text
    shown, noun, claim = match.groups()
    number = number_from(shown)
    assert noun == (one if shown.lstrip("-") == "1" else many), text
    if fact.counted[1]:  # the label is not said beside what is counted: "2 missed milestones", once
        assert fact.label.lower() not in text.lower() or fact.label.lower() in noun, text
    if op == "between":
        found = re.fullmatch(r"(between|not between) (\S+) and (\S+)", claim)
        assert found, text
        inside = number_from(found[2]) <= number <= number_from(found[3])
        assert inside == (found[1] == "between"), text
        return
    if op in ("in", "not_in"):
        found = re.fullmatch(r"(one of|none of) (.+)", claim)
        assert found, text
        member = number in [number_from(v) for v in found[2].split(", ")]
        assert member == (found[1] == "one of"), text
        return
    for words, claimed in sorted(COUNT_CLAIMS.items(), key=lambda item: -len(item[0])):
        if claim.startswith(words + " "):
            threshold = claim.removeprefix(words + " ")
            assert re.fullmatch(r"-?[\d,]+(?:\.\d+)?", threshold), text  # no unit repeated
            assert holds(claimed, number, number_from(threshold)), text
            return
    raise AssertionError(f"no comparison in {text!r}")


def check_sentence(text: str, fact: Fact, op: str, parse: Any) -> None:
    """The claim a sentence makes about the numbers it shows is true of them."""
    if fact.type is FactType.INT and fact.unit_words[1]:
        check_count(text, fact, op)
        return
    rest = text.removeprefix(fact.label + " ")
    assert rest != text, text
    if op == "between":
        match = re.fullmatch(r"(.+) (is between|is not between) (.+) and (.+)", rest)
        assert match, text
        shown, words, low, high = match.groups()
        inside = parse(low) <= parse(shown) <= parse(high)
        assert inside == (words == "is between"), text
        return
    if op in ("in", "not_in"):
        match = re.fullmatch(r"(.+?) (is one of|is none of) (.+)", rest)
        assert match, text
        shown, words, listed = match.groups()
        member = parse(shown) in [parse(v) for v in listed.split(", ")]
        assert member == (words == "is one of"), text
        return
    for words, claimed in sorted(CLAIMS.items(), key=lambda item: -len(item[0])):
        shown, found, threshold = rest.partition(f" {words} ")
        if found:
            assert holds(claimed, parse(shown), parse(threshold)), text
            return
    raise AssertionError(f"no comparison in {text!r}")


def rendered(fact: Fact, op: str, value: Any, actual: Any) -> list[str]:
    """Every way a person reads this condition: the summary and the sentence from the stored JSON."""
    tree = {"fact": fact.name, "op": op, "value": value}
    compiled = compile_condition(tree, SUBJECT.get(fact.subject, "change_order"))
    evaluation = compiled.evaluate({fact.name: actual})
    stored = evaluation.to_json()
    evidence = {"facts": {fact.name: {"value": stored["explanation"][0]["actual"]}}, **stored}
    [condition] = conditions(evidence)
    summary = stored["summary"].removeprefix("not matched: ")
    return [summary, condition.sentence]


NUMERIC = [f for f in FACTS.values() if f.type in (FactType.MONEY, FactType.PERCENT)]
INTEGER = [f for f in FACTS.values() if f.type is FactType.INT]
ORDERED = ("eq", "ne", "gt", "gte", "lt", "lte")


@st.composite
def numeric_case(draw: st.DrawFn) -> tuple[Fact, str, Any, Any]:
    fact = draw(st.sampled_from(NUMERIC))
    places = draw(st.integers(0, 4))
    threshold = Decimal(draw(st.integers(-(10**9), 10**9))).scaleb(-places)
    delta = draw(st.sampled_from(_DELTAS)) * draw(st.sampled_from([1, -1]))
    actual = threshold + delta
    op = draw(st.sampled_from((*ORDERED, "between", "in", "not_in")))
    if op == "between":
        width = draw(st.sampled_from(_DELTAS))
        return fact, op, [str(threshold), str(threshold + width)], actual
    if op in ("in", "not_in"):
        return fact, op, [str(threshold), str(threshold + draw(st.sampled_from(_DELTAS[1:])))], actual
    return fact, op, str(threshold), actual


@given(numeric_case())
@settings(max_examples=600, deadline=None)
def test_money_and_percent_comparisons_read_true_at_and_near_each_threshold(case: tuple) -> None:
    fact, op, value, actual = case
    for text in rendered(fact, op, value, actual):
        check_sentence(text, fact, op, number_from)


@given(
    st.sampled_from(INTEGER),
    st.sampled_from((*ORDERED, "between", "in", "not_in")),
    st.integers(-400, 400),
    st.integers(-3, 3),
)
@settings(max_examples=300, deadline=None)
def test_whole_number_comparisons_read_true_with_their_units(
    fact: Fact, op: str, limit: int, delta: int
) -> None:
    value: Any = [limit, limit + abs(delta)] if op in ("between", "in", "not_in") else limit
    for text in rendered(fact, op, value, limit + delta):
        check_sentence(text, fact, op, number_from)
        if fact.unit_words[1]:  # the unit said once: never "2 milestones is above 0 milestones"
            assert text.count(f" {fact.unit_words[1]} ") + text.endswith(f" {fact.unit_words[1]}") <= 1, text


@given(
    st.sampled_from(ORDERED),
    st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)),
    st.integers(-2, 2),
)
@settings(max_examples=150, deadline=None)
def test_date_comparisons_read_true(op: str, limit: dt.date, delta: int) -> None:
    with mock.patch.dict(catalogue.FACTS, {DATE.name: DATE}):
        for text in rendered(DATE, op, limit.isoformat(), limit + dt.timedelta(days=delta)):
            check_sentence(text, DATE, op, date_from)


@given(st.sampled_from([f for f in FACTS.values() if f.type is FactType.BOOL]), st.booleans(), st.booleans())
@settings(max_examples=40, deadline=None)
def test_true_false_facts_say_what_the_value_is(fact: Fact, expected: bool, actual: bool) -> None:
    for text in rendered(fact, "is", expected, actual):
        said = fact.says[0 if actual else 1]
        assert text.lower() == said.lower(), text


@given(
    # Text facts with choices (a document's label is free text: the tool's own classes).
    st.sampled_from([f for f in FACTS.values() if f.type is FactType.TEXT and f.choices]),
    st.sampled_from(("eq", "ne")),
    st.data(),
)
@settings(max_examples=80, deadline=None)
def test_text_comparisons_read_true_in_words(fact: Fact, op: str, data: st.DataObject) -> None:
    value, actual = data.draw(st.sampled_from(fact.choices)), data.draw(st.sampled_from(fact.choices))
    words = {w.lower(): choice for choice, w in zip(fact.choices, fact.choice_words, strict=True)}
    for text in rendered(fact, op, value, actual):
        match = re.fullmatch(rf"{re.escape(fact.label)} is ([^,_]+?)(?:, not ([^,_]+))?", text)
        assert match, text  # "Schedule status is at risk, not on track": words, never at_risk
        assert words[match[1]] == actual, text
        if match[2]:
            assert words[match[2]] == value != actual, text
        else:
            assert value == actual, text


@given(
    st.sampled_from([f for f in FACTS.values() if f.type is FactType.TEXT and f.choices]),
    st.sampled_from(("in", "not_in")),
    st.data(),
)
@settings(max_examples=60, deadline=None)
def test_text_memberships_read_true_in_words(fact: Fact, op: str, data: st.DataObject) -> None:
    listed = data.draw(st.lists(st.sampled_from(fact.choices), min_size=1, max_size=3, unique=True))
    actual = data.draw(st.sampled_from(fact.choices))
    words = {w.lower(): choice for choice, w in zip(fact.choices, fact.choice_words, strict=True)}
    for text in rendered(fact, op, listed, actual):
        match = re.fullmatch(rf"{re.escape(fact.label)} is ([^_(]+) \((one of|none of) ([^_]+)\)", text)
        assert match, text
        assert words[match[1]] == actual and [words[w] for w in match[3].split(", ")] == listed, text
        assert (actual in listed) == (match[2] == "one of"), text


# --- examples people reported ---------------------------------------------------------------------------


def test_eleven_ninety_nine_is_not_shown_as_twelve_below_twelve() -> None:
    margin = FACTS["project.margin_pct"]
    [summary, line] = rendered(margin, "lt", 12, Decimal("11.99"))
    assert summary == line == "Margin 11.99% is below 12%"
    [summary, _] = rendered(margin, "lt", 12, Decimal("9"))
    assert summary == "Margin 9.0% is below 12%"


@pytest.mark.parametrize(
    ("value", "fact", "text"),
    [
        (Decimal("60000"), "change_order.amount", "$60,000.00"),
        (Decimal("-1200.5"), "client.ar_overdue_amount", "-$1,200.50"),
        (Decimal("11.456"), "project.margin_pct", "11.5%"),
        (1, "client.days_to_renewal", "1 day"),
        (45, "client.days_to_renewal", "45 days"),
        (2, "project.milestones_missed", "2 milestones"),
        (1, "project.milestones_missed", "1 milestone"),
        (3, "submittal.revision", "3"),
        (True, "client.missed_last_milestone", "yes"),
        (None, "project.margin_pct", "no data"),
        ("at_risk", "project.schedule_status", "At risk"),
        ("on_track", "project.schedule_status", "On track"),
        ("pending", "change_order.status", "Pending"),
        ("something new", "change_order.status", "something new"),  # an unknown value as it came
    ],
)
def test_readings(value: object, fact: str, text: str) -> None:
    assert reading(value, fact) == text


def test_thresholds_read_as_written_and_loose_shapes_drop_a_count_unit() -> None:
    assert written("12", "project.margin_pct") == "12%"
    assert written("50000", "change_order.amount") == "$50,000.00"
    assert written("50000.5", "change_order.amount") == "$50,000.50"
    assert reading(3, kind="int", unit="count") == "3"
    assert reading(1, kind="int", unit="days") == "1 day"


def test_every_fact_has_a_label_and_counted_facts_their_unit_in_words() -> None:
    for fact in FACTS.values():
        assert fact.label and "_" not in fact.label and "." not in fact.label, fact.name
        if fact.unit in ("days", "count", "USD", "%"):
            assert all(fact.unit_words), fact.name
        if fact.type is FactType.BOOL:
            assert all(fact.says), fact.name


def test_a_condition_that_failed_under_not_held() -> None:
    evidence = {
        "facts": {},
        "explanation": [
            {"path": "when", "op": "not", "result": "true"},
            {"path": "when.not", "fact": "change_order.status", "op": "eq", "expected": "void",
             "actual": "pending", "result": "false"},
        ],
    }  # fmt: skip
    [condition] = conditions(evidence)
    assert condition.held and condition.sentence == "Change order status is pending, not void"
    assert (condition.actual, condition.expected) == ("Pending", "Void")
    # A value outside the choices is said as it came, capitals and all.
    said = sentence("change_order.status", "eq", "pending", "ON HOLD", "false")
    assert said == "Change order status is ON HOLD, not pending"
    assert sentence("project.margin_pct", "lt", "12", None, "unknown") == "Margin: no data"


def test_counts_say_their_unit_once() -> None:
    missed = FACTS["project.milestones_missed"]
    [summary, line] = rendered(missed, "gt", 0, 2)
    assert summary == line == "2 missed milestones (more than 0)"
    [summary, _] = rendered(missed, "gt", 0, 1)
    assert summary == "1 missed milestone (more than 0)"
    [summary, _] = rendered(FACTS["client.days_to_renewal"], "between", [0, 60], 45)
    assert summary == "45 days to renewal (between 0 and 60)"
    [summary, _] = rendered(FACTS["project.data_quality_errors"], "eq", 0, 3)
    assert summary == "3 data-quality errors (not 0)"
    [summary, _] = rendered(FACTS["change_order.age_days"], "gte", 30, 45)
    assert summary == "Change order age: 45 days, at least 30"


def test_text_choices_in_words_and_their_raw_values_in_the_trace() -> None:
    status = FACTS["project.schedule_status"]
    [summary, line] = rendered(status, "ne", "on_track", "at_risk")
    assert summary == line == "Schedule status is at risk, not on track"
    evaluation = compile_condition({"fact": status.name, "op": "ne", "value": "on_track"}, "project")
    stored = evaluation.evaluate({status.name: "at_risk"}).to_json()
    assert "at_risk" in stored["explanation"][0]["text"]  # the Details view keeps the raw value
    assert stored["explanation"][0]["actual"] == "at_risk"  # and so does the stored, machine record


def test_money_reads_in_one_style_as_a_threshold_and_as_a_value() -> None:
    """``$60,000.00 is at least $50,000.00``: an amount and its threshold in cents alike."""
    condition = compile_condition(
        {"fact": "change_order.amount", "op": "gte", "value": 50000}, "change_order"
    )
    evaluation = condition.evaluate({"change_order.amount": Decimal("60000")})
    stored = evaluation.to_json()
    [said] = conditions({"facts": {}, **stored})
    assert (said.actual, said.expected) == ("$60,000.00", "$50,000.00")
    assert stored["summary"] == said.sentence == "Change order amount $60,000.00 is at least $50,000.00"
    assert "change_order.amount is $60,000.00, at least $50,000.00" in stored["explanation"][0]["text"]


@pytest.mark.parametrize(
    ("facts", "values", "actual", "threshold", "said"),
    [
        (
            ("project.cost_to_date", "project.income_to_date"),
            ("120000", "100000"),
            "$120,000.00",
            "Income to date ($100,000.00)",
            "Cost to date $120,000.00 is above Income to date $100,000.00",
        ),
        (
            ("project.margin_pct", "change_order.amount_pct_of_contract"),
            ("12.04", "12.01"),
            "12.04%",
            "Change order share of contract (12.01%)",
            "Margin 12.04% is above Change order share of contract 12.01%",
        ),
    ],
)
def test_a_fact_compared_with_another_reads_both_values_as_values(
    facts: tuple[str, str], values: tuple[str, str], actual: str, threshold: str, said: str
) -> None:
    """The other fact is a value read, not a threshold written: ``$100,000.00`` beside ``$120,000.00``
    (never ``($100,000)``), as precise as the comparison needs (``12.04%`` against ``12.01%``), the same
    in the summary, the sentence of pages and emails, the threshold column and the trace."""
    first, other = facts
    condition = compile_condition({"fact": first, "op": "gt", "other": other}, "change_order")
    evaluation = condition.evaluate({first: Decimal(values[0]), other: Decimal(values[1])})
    stored = evaluation.to_json()
    [condition_said] = conditions({"facts": {}, **stored})
    assert (condition_said.actual, condition_said.expected) == (actual, threshold)
    assert stored["summary"] == condition_said.sentence == said
    assert (
        f"is {actual}, more than {other} ({threshold.rpartition('(')[2][:-1]})"
        in stored["explanation"][0]["text"]
    )


def test_free_text_says_its_value_once() -> None:
    """A document's class is the tool's own name for it: said once and quoted, never ``Document class
    change_order_request equals change_order_request``."""
    said = sentence("document.label", "eq", "change_order_request", "change_order_request", "true")
    assert said == "Document class is “change_order_request”"
    assert sentence("document.label", "eq", "invoice", "receipt", "false") == (
        "Document class is “receipt”, not “invoice”"
    )
    assert sentence("document.label", "ne", "invoice", "receipt", "true") == (
        "Document class is “receipt”, not “invoice”"
    )
