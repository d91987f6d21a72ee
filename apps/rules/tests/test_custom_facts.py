"""Operator-defined facts without a database: validation (types, units, unknown names, cycles), their
words, the Python computation, and fact-vs-fact conditions in the evaluator and the SQL compiler."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from apps.rules.engine import customfacts as cf
from apps.rules.engine.catalogue import FACTS, facts_for, is_visible
from apps.rules.engine.evaluator import RuleValidationError, Verdict, compile_condition
from apps.rules.evaluation.sql import condition_sql

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()


def spec(**kw):
    base = {
        "key": "co_pending_30d",
        "subject": "project",
        "type": "int",
        "unit": "count",
        "description": "",
        "kind": "aggregate",
        "related": "change_orders",
        "function": "count",
        "filters": [{"field": "status", "op": "eq", "value": "pending"}],
        "window": "30d",
    }
    base.update(kw)
    return base


def errors_of(raw, others=None):
    with pytest.raises(cf.DefinitionError) as caught:
        cf.parse_definition(raw, others=others)
    return caught.value.errors


def test_a_count_with_a_filter_and_a_window_reads_as_its_definition():
    d = cf.parse_definition(spec())
    assert d.name == "custom.co_pending_30d"
    assert d.definition_text() == "count of change orders in the last 30 days where status = pending"
    assert cf.parse_definition(d.to_dict()) == d  # the stored spec is canonical


@pytest.mark.parametrize(
    ("changes", "where", "words"),
    [
        ({"type": "money", "unit": "USD"}, "type", "this aggregate is int (count), not money (USD)"),
        ({"function": "sum", "field": "amount"}, "type", "is money (USD), not int (count)"),
        (
            {"function": "avg", "related": "submittals", "field": "revision", "filters": []},
            "function",
            "not a whole number",
        ),
        ({"function": "sum", "field": "status"}, "field", "sum needs a number"),
        ({"related": "invoices"}, "related", "'invoices' is not a related record set"),
        ({"field": "amount_usd", "function": "max"}, "field", "'amount_usd' is not a field of change orders"),
        (
            {"filters": [{"field": "status", "op": "gt", "value": "x"}]},
            "filters[0].op",
            "does not apply to status",
        ),
        (
            {"filters": [{"field": "status", "op": "eq", "value": "pendng"}]},
            "filters[0].value",
            "did you mean 'pending'",
        ),
        (
            {"filters": [{"field": "amount", "op": "gte", "value": "lots"}]},
            "filters[0].value",
            "expected a number",
        ),
        ({"window": "30 days"}, "window", "is not a duration"),
        ({"related": "milestones", "filters": [], "window": "36h"}, "window", "whole days"),
        ({"subject": "invoice"}, "subject", "is not a subject type"),
        ({"key": "Bad Key"}, "key", "is not a key"),
        ({"kind": "formula"}, "kind", "is not a kind"),
    ],
)
def test_bad_definitions_are_refused_with_the_reason(changes, where, words):
    errors = errors_of(spec(**changes))
    assert any(w == where and words in message for w, message in errors), errors


def test_sum_of_a_money_field_is_money_and_of_whole_numbers_whole():
    money = cf.parse_definition(
        spec(key="co_total", type="money", unit="USD", function="sum", field="amount")
    )
    assert (money.type.value, money.unit) == ("money", "USD")
    revisions = cf.parse_definition(
        spec(
            key="revs", related="submittals", function="sum", field="revision", unit="", filters=[], window=""
        )
    )
    assert revisions.type.value == "int"


def ratio(key, a, b, **kw):
    return {
        "key": key,
        "subject": "project",
        "type": "percent",
        "unit": "%",
        "kind": "ratio",
        "a": a,
        "b": b,
        **kw,
    }


def test_ratio_of_money_is_a_percent_and_difference_keeps_the_unit():
    r = cf.parse_definition(ratio("cost_share", "project.cost_to_date", "project.income_to_date"))
    assert r.definition_text() == "project.cost_to_date / project.income_to_date × 100"
    d = cf.parse_definition(
        {"key": "gap", "subject": "project", "type": "money", "unit": "USD", "kind": "difference",
         "a": "project.income_to_date", "b": "project.cost_to_date"}
    )  # fmt: skip
    assert (d.type.value, d.unit) == ("money", "USD")
    wrong = errors_of({**d.to_dict(), "type": "percent", "unit": "%"})
    assert any("this difference is money (USD), not percent (%)" in m for _, m in wrong)


def test_ratio_and_difference_refuse_mixed_units_and_text():
    errors = errors_of(ratio("x", "project.contract_value", "project.milestones_missed"))
    assert any("one unit" in m for _, m in errors), errors
    errors = errors_of(ratio("x", "project.schedule_status", "project.margin_pct"))
    assert any("needs numbers" in m for _, m in errors), errors


def test_unknown_and_invisible_operands_are_refused():
    errors = errors_of(ratio("x", "project.margins", "project.income_to_date"))
    assert ("a", "unknown fact 'project.margins'") in errors
    errors = errors_of(ratio("x", "change_order.amount", "project.contract_value"))
    assert any("not a fact a project sees" in m for _, m in errors)
    errors = errors_of(ratio("x", "custom.nothing", "project.contract_value"))
    assert ("a", "unknown fact 'custom.nothing'") in errors


def test_a_cycle_among_custom_facts_is_refused():
    a = cf.parse_definition(
        {"key": "a", "subject": "project", "type": "money", "unit": "USD", "kind": "difference",
         "a": "project.income_to_date", "b": "project.cost_to_date"}
    )  # fmt: skip
    b = cf.parse_definition(
        {"key": "b", "subject": "project", "type": "money", "unit": "USD", "kind": "difference",
         "a": "custom.a", "b": "project.cost_to_date"},
        others={a.name: a},
    )  # fmt: skip
    errors = errors_of({**a.to_dict(), "a": "custom.b"}, others={a.name: a, b.name: b})
    assert errors == [("", "a cycle among custom facts: custom.a → custom.b → custom.a")]
    errors = errors_of({**a.to_dict(), "a": "custom.a"}, others={a.name: a})
    assert any("custom.a → custom.a" in m for _, m in errors)


INJECTIONS = [
    "'; DROP TABLE entities_project; --",
    'x" OR 1=1 --',
    "status) OR (1=1",
    "r.amount; DELETE FROM rules_rule",
    "%(ids)s",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_strings_in_identifier_fields_are_refused(text):
    for name in ("key", "subject", "type", "kind", "related", "function", "field", "window"):
        errors = errors_of(spec(**{name: text}))
        assert errors, name
    errors = errors_of(spec(filters=[{"field": text, "op": "eq", "value": "x"}]))
    assert errors
    errors = errors_of(spec(filters=[{"field": "status", "op": text, "value": "x"}]))
    assert errors
    errors = errors_of(ratio("x", text, "project.income_to_date"))
    assert errors


@pytest.mark.parametrize("text", INJECTIONS)
def test_an_injection_string_as_a_value_is_a_bound_parameter_never_sql(text):
    d = cf.parse_definition(
        spec(related="submittals", filters=[{"field": "status", "op": "eq", "value": text}], window="")
    )
    params = cf.SqlParams("p")
    join = cf.aggregate_join(d, "a0", "s", params, now=NOW, today=TODAY, ids_param=None)
    assert text not in join.sql
    assert text in params.values.values()


def rows(*items):
    return [dict(item) for item in items]


def test_the_python_aggregate_keeps_rows_in_the_window_that_pass_every_filter():
    d = cf.parse_definition(spec())
    data = rows(
        {"created_upstream_at": NOW - dt.timedelta(days=1), "status": "pending"},
        {"created_upstream_at": NOW - dt.timedelta(days=29, hours=23), "status": "pending"},
        {"created_upstream_at": NOW - dt.timedelta(days=30, seconds=1), "status": "pending"},  # outside
        {"created_upstream_at": NOW - dt.timedelta(days=2), "status": "approved"},
        {"created_upstream_at": NOW - dt.timedelta(days=2), "status": None},
    )
    assert cf.aggregate_rows(d, data, now=NOW, today=TODAY) == 2
    assert cf.aggregate_rows(d, [], now=NOW, today=TODAY) == 0


def test_min_max_avg_of_no_values_are_null_and_sum_is_zero():
    base = {
        "related": "financial_lines",
        "field": "balance",
        "type": "money",
        "unit": "USD",
        "filters": [],
        "window": "",
    }
    lines = rows({"txn_date": TODAY, "balance": None})
    for function, expected in (("sum", Decimal(0)), ("min", None), ("max", None), ("avg", None)):
        d = cf.parse_definition(spec(key=f"b_{function}", function=function, **base))
        assert cf.aggregate_rows(d, lines, now=NOW, today=TODAY) == expected
    avg = cf.parse_definition(spec(key="b_avg", function="avg", **base))
    values = rows({"txn_date": TODAY, "balance": Decimal("1")}, {"txn_date": TODAY, "balance": Decimal("2")},
                  {"txn_date": TODAY, "balance": Decimal("2")})  # fmt: skip
    assert cf.aggregate_rows(avg, values, now=NOW, today=TODAY) == Decimal("1.6667")


def test_ratio_is_null_on_zero_or_missing_and_rounded_like_margin():
    r = cf.parse_definition(ratio("cost_share", "project.cost_to_date", "project.income_to_date"))
    assert cf.combine(r, Decimal("88000"), Decimal("100000")) == Decimal("88.0000")
    assert cf.combine(r, Decimal("1"), Decimal("3")) == Decimal("33.3333")
    assert cf.combine(r, Decimal("1"), Decimal("0")) is None
    assert cf.combine(r, None, Decimal("3")) is None


def test_installed_custom_facts_are_catalogued_for_their_subject_only(installed):
    d = cf.parse_definition(spec())
    installed(d)
    assert FACTS["custom.co_pending_30d"].applies_to == ("project",)
    assert "custom.co_pending_30d" in FACTS
    assert is_visible("custom.co_pending_30d", "project")
    assert not is_visible("custom.co_pending_30d", "change_order")
    assert "custom.co_pending_30d" in [f.name for f in facts_for("project")]
    with pytest.raises(RuleValidationError, match="not available to a change_order rule"):
        compile_condition({"fact": "custom.co_pending_30d", "op": "gt", "value": 1}, "change_order")


def test_a_rule_on_a_custom_fact_explains_it_with_its_definition(installed):
    installed(cf.parse_definition(spec(), version=3))
    condition = compile_condition({"fact": "custom.co_pending_30d", "op": "gte", "value": 4}, "project")
    evaluation = condition.evaluate({"custom.co_pending_30d": 4})
    assert evaluation.outcome is Verdict.MATCHED
    [leaf] = [e for e in evaluation.to_json()["explanation"] if e["fact"]]
    assert (
        "custom.co_pending_30d (Co pending 30d) = 4 change orders — count of change orders in the last 30 "
        "days where "
        "status = pending (v3)"
    ) in leaf["text"]
    with pytest.raises(RuleValidationError, match="expected an integer"):
        compile_condition({"fact": "custom.co_pending_30d", "op": "gte", "value": "4.5"}, "project")


def test_a_custom_fact_reads_as_its_label_in_sentences_summaries_and_traces(installed):
    """People read the operator's label ("Pending change orders"), never the key capitalised
    ("Custom.co_pending_30d"): in the summary, the condition sentences of pages and emails, and beside the
    key in the trace."""
    from apps.rules.engine.wording import conditions, why

    installed(cf.parse_definition(spec(label="  Pending   change orders "), version=2))
    assert FACTS["custom.co_pending_30d"].label == "Pending change orders"
    condition = compile_condition({"fact": "custom.co_pending_30d", "op": "gte", "value": 3}, "project")
    evaluation = condition.evaluate({"custom.co_pending_30d": 4})
    stored = evaluation.to_json()
    meta = {"value": 4, "type": "int", "unit": "count", "version": 2, "definition": "…"}
    evidence = {"facts": {"custom.co_pending_30d": meta}, **stored}
    [said] = conditions(evidence)

    assert (
        stored["summary"]
        == why(evidence)
        == said.sentence
        == "Pending change orders: 4 change orders, at least 3"
    )
    assert said.label == "Pending change orders"
    assert (
        "custom.co_pending_30d (Pending change orders) = 4 change orders" in stored["explanation"][0]["text"]
    )
    assert "Custom." not in stored["summary"] + said.sentence


def test_a_custom_fact_without_a_label_reads_as_its_key_in_words(installed):
    unlabelled = cf.parse_definition(spec())
    assert (unlabelled.label, unlabelled.shown_label) == ("", "Co pending 30d")
    assert "label" not in unlabelled.to_dict(), "specs saved before labels stay canonical"
    labelled = cf.parse_definition(spec(label="Pending change orders"))
    assert cf.parse_definition(labelled.to_dict()) == labelled
    installed(unlabelled)
    condition = compile_condition({"fact": "custom.co_pending_30d", "op": "gte", "value": 3}, "project")
    assert condition.evaluate({"custom.co_pending_30d": 4}).summary().startswith("Co pending 30d: 4")


@pytest.mark.parametrize("label", ["x" * 101, "two\nlines", 12])
def test_a_label_is_one_short_line_of_text(label):
    [(where, _)] = errors_of(spec(label=label))
    assert where == "label"


# --- fact-vs-fact conditions -------------------------------------------------------------------------


def test_a_fact_compared_with_another_fact():
    condition = compile_condition(
        {"fact": "project.cost_to_date", "op": "gt", "other": "project.income_to_date"}, "project"
    )
    assert condition.to_tree() == {
        "fact": "project.cost_to_date",
        "op": "gt",
        "other": "project.income_to_date",
    }
    assert condition.facts == {"project.cost_to_date", "project.income_to_date"}
    over = {"project.cost_to_date": Decimal("120"), "project.income_to_date": Decimal("100")}
    evaluation = condition.evaluate(over)
    assert evaluation.outcome is Verdict.MATCHED
    assert evaluation.summary() == "Cost to date $120.00 is above Income to date $100.00"
    entry = evaluation.to_json()["explanation"][0]
    assert (entry["other"], entry["expected"], entry["actual"]) == ("project.income_to_date", "100", "120")
    under = {**over, "project.cost_to_date": Decimal("100")}
    assert condition.matches(under) is Verdict.NOT_MATCHED
    assert condition.evaluate(under).outcome is Verdict.NOT_MATCHED


def test_a_comparison_with_a_null_or_stale_fact_is_insufficient_data():
    condition = compile_condition(
        {"fact": "project.cost_to_date", "op": "gt", "other": "project.income_to_date"}, "project"
    )
    facts = {"project.cost_to_date": Decimal("120"), "project.income_to_date": None}
    assert condition.evaluate(facts).outcome is Verdict.INSUFFICIENT_DATA
    assert condition.matches(facts) is Verdict.INSUFFICIENT_DATA
    fresh = {"project.cost_to_date": Decimal("120"), "project.income_to_date": Decimal("1")}
    ages = {"project.cost_to_date": 10.0, "project.income_to_date": 10_000.0}
    limit = dt.timedelta(hours=1)
    assert condition.evaluate(fresh, ages=ages, max_age=limit).outcome is Verdict.INSUFFICIENT_DATA
    assert condition.matches(fresh, ages=ages, max_age=limit) is Verdict.INSUFFICIENT_DATA
    assert (
        condition.matches(fresh, ages={**ages, "project.income_to_date": 5.0}, max_age=limit)
        is Verdict.MATCHED
    )


@pytest.mark.parametrize(
    ("leaf", "words"),
    [
        ({"fact": "project.margin_pct", "op": "gt", "other": "project.contract_value"}, "one type and unit"),
        (
            {"fact": "project.milestones_missed", "op": "gt", "other": "project.days_behind_schedule"},
            "one type and unit",
        ),
        (
            {"fact": "project.margin_pct", "op": "between", "other": "project.margin_pct"},
            "cannot compare two facts",
        ),
        ({"fact": "project.margin_pct", "op": "gt", "other": "project.margin_pct"}, "compared with itself"),
        (
            {"fact": "project.margin_pct", "op": "gt", "other": "change_order.amount_pct_of_contract"},
            "not available",
        ),
        ({"fact": "project.margin_pct", "op": "gt", "other": "project.nope"}, "unknown fact"),
        (
            {"fact": "project.margin_pct", "op": "gt", "other": "project.cost_to_date", "value": 3},
            "unexpected key",
        ),
    ],
)
def test_bad_fact_comparisons_are_refused(leaf, words):
    with pytest.raises(RuleValidationError, match=words):
        compile_condition(leaf, "project")


def test_a_fact_comparison_compiles_to_sql_over_two_columns_and_is_null_when_stale():
    tree = {"fact": "project.cost_to_date", "op": "gte", "other": "project.income_to_date"}
    sql, params = condition_sql(tree, "project")
    assert sql == '(f."project.cost_to_date" >= f."project.income_to_date")'
    assert params == {}
    sql, _ = condition_sql(tree, "project", stale=frozenset({"project.income_to_date"}))
    assert sql == "NULL::boolean"


def test_the_rules_file_reads_and_writes_fact_comparisons_and_reports_them_by_line():
    from apps.rules.engine.ruleset import RulesFileError, dump_rules, parse_rules

    text = (
        "- key: thin\n  name: Costs above income\n  subject: project\n  when:\n    all:\n"
        "      - {fact: project.cost_to_date, op: gt, other: project.income_to_date}\n"
        "      - {fact: project.margin_pct, op: lt, value: 12}\n"
    )
    [spec] = parse_rules(text)
    first = spec.when["all"][0]
    assert first == {"fact": "project.cost_to_date", "op": "gt", "other": "project.income_to_date"}
    assert parse_rules(dump_rules([spec]))[0].to_dict() == spec.to_dict()
    bad = text.replace("other: project.income_to_date", "other: project.schedule_status")
    with pytest.raises(RulesFileError) as caught:
        parse_rules(bad)
    [problem] = caught.value.errors
    assert problem.line == 6 and "cannot be compared with project.schedule_status" in problem.message
