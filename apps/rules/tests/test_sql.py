"""The SQL compilation of a condition agrees with the Python evaluator, subject by subject.

The property tests draw random condition trees (depth ≤ 4, facts a change order sees, operators valid for
each fact's type, thresholds taken from and around the data) and random staleness limits, and compare
``sql.batch_outcomes`` with ``CompiledCondition.matches`` on ``facts.compute_contexts``, on real
PostgreSQL. Data with NULL-producing cases (no income, no contract value, no client, no renewal date, no
milestones, stale or never-synced streams) is built once per test, or per example inside a savepoint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.connectors.models import StreamState
from apps.rules.engine.catalogue import FactType, facts_for, operators_for
from apps.rules.engine.evaluator import RuleValidationError, Verdict, compile_condition
from apps.rules.engine.ruleset import parse_rules
from apps.rules.evaluation.facts import ENTITY_STREAMS, compute_contexts
from apps.rules.evaluation.services import rules_import
from apps.rules.evaluation.sql import (
    RuleQuery,
    batch_outcomes,
    batch_outcomes_many,
    condition_sql,
    matching_ids,
    outcomes_sql,
)
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
)

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 15, 17, 0, tzinfo=dt.UTC)
TODAY = dt.date(2026, 6, 15)
FACTS = facts_for("change_order")
MAX_AGES = [
    None,
    dt.timedelta(minutes=30),
    dt.timedelta(minutes=90),
    dt.timedelta(hours=3),
    dt.timedelta(days=2),
]


# --- data ------------------------------------------------------------------------------------------


def streams(ages: dict[str, dt.timedelta | None]) -> None:
    """Stream states per entity: an age, or None for a stream that never synced successfully."""
    for entity, entity_streams in ENTITY_STREAMS.items():
        if entity not in ages:
            continue  # no stream state at all: the fact's age is unknown
        conn = ConnectionFactory(slug=f"src-{entity}")
        for stream in entity_streams:
            age = ages[entity]
            StreamState.objects.update_or_create(
                connection=conn,
                stream=stream,
                defaults={"last_success_at": None if age is None else NOW - age},
            )


def days_ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


def build_fixed_data() -> None:
    """A small company whose change orders cover every way a fact can be null, zero or on a boundary."""
    streams(
        {
            "change_order": dt.timedelta(minutes=10),
            "project": dt.timedelta(hours=1),
            "financial_line": dt.timedelta(hours=2),
            "milestone": dt.timedelta(hours=30),
            "client": None,
        }
    )
    renewing = ClientFactory(renewal_date=TODAY + dt.timedelta(days=45))
    lapsed = ClientFactory(renewal_date=TODAY - dt.timedelta(days=5))
    plain = ClientFactory()  # no renewal date, no milestones: null days_to_renewal and missed_last_milestone

    healthy = ProjectFactory(client=renewing, contract_value=Decimal("400000.00"), schedule_status="on_track")
    FinancialLineFactory(project=healthy, kind="invoice", amount=Decimal("100000.00"))
    FinancialLineFactory(project=healthy, kind="bill", amount=Decimal("88000.00"))  # margin exactly 12
    MilestoneFactory(project=healthy, due_date=days_ago(20), completed_date=days_ago(25))
    MilestoneFactory(project=healthy, due_date=days_ago(4), completed_date=None)  # the last one, missed

    thin = ProjectFactory(client=lapsed, contract_value=Decimal("0.00"), schedule_status="behind")
    FinancialLineFactory(project=thin, kind="invoice", amount=Decimal("50000.00"), balance=Decimal("9000"),
                         due_date=days_ago(10))  # fmt: skip
    FinancialLineFactory(project=thin, kind="purchase", amount=Decimal("61000.00"))  # negative margin
    MilestoneFactory(project=thin, due_date=days_ago(3), completed_date=days_ago(1))

    no_income = ProjectFactory(client=plain, contract_value=None, schedule_status="")
    FinancialLineFactory(project=no_income, kind="bill", amount=Decimal("5000.00"))

    orphan = ProjectFactory(client=None, contract_value=Decimal("1000000.00"), schedule_status="at_risk")

    amounts = ["0.00", "999.99", "50000.00", "60000.00", "12000.50", "-250.00"]
    statuses = ["draft", "pending", "approved", "rejected", "void", "pending"]
    for i, project in enumerate([healthy, thin, no_income, orphan, healthy, thin]):
        for j in range(2):
            ChangeOrderFactory(
                project=project,
                amount=Decimal(amounts[(i + j) % len(amounts)]),
                status=statuses[(i + 2 * j) % len(statuses)],
                created_upstream_at=NOW - dt.timedelta(days=[0, 3, 29, 31, 45, 400][(i + j) % 6], hours=j),
            )
    # A change order with no project at all: every project and client fact is null.
    ChangeOrderFactory(project=None, project_ref="gone", amount=Decimal("75000.00"), created_upstream_at=NOW)


# --- trees -----------------------------------------------------------------------------------------


def observed_values(subject_type: str = "change_order", facts: list[Any] = FACTS) -> dict[str, list[Any]]:
    """Each fact's values in the data (numbers and dates: text and true/false values are drawn from their
    choices), for thresholds taken from and around them."""
    seen: dict[str, list[Any]] = {f.name: [] for f in facts}
    for ctx in compute_contexts(subject_type, now=NOW):
        for name, value in ctx.values.items():
            if value is not None and not isinstance(value, str | bool) and value not in seen[name]:
                seen[name].append(value)
    return seen


def number_strategy(values: list[Any], fact_type: FactType) -> st.SearchStrategy[Any]:
    exact = st.sampled_from(sorted(values)) if values else st.just(0)
    if fact_type is FactType.INT:
        near = sorted({int(v) + d for v in values for d in (-1, 0, 1)} | {0})
        return st.one_of(exact, st.sampled_from(near), st.integers(-100, 500))
    near_d = sorted(
        {Decimal(v) + d for v in values for d in (Decimal("-0.01"), Decimal(0), Decimal("0.01"))}
        | {Decimal(0)}
    )
    scale = [Decimal("0.5"), Decimal(1), Decimal(2)]
    return st.one_of(
        exact,
        st.sampled_from(near_d),
        st.builds(
            lambda v, s: (v * s).quantize(Decimal("0.0001")), st.sampled_from(near_d), st.sampled_from(scale)
        ),
        st.decimals(-100_000, 100_000, places=2, allow_nan=False, allow_infinity=False),
    )


def value_strategy(fact, op: str, values: list[Any], words: Sequence[str] = ()) -> st.SearchStrategy[Any]:
    """A threshold for ``fact`` and ``op``; ``words`` are the values of a text fact without choices."""
    if op in ("is_null", "is"):
        return st.booleans()
    if fact.type is FactType.BOOL:
        return st.booleans()
    if fact.type is FactType.TEXT:
        choices = list(fact.choices) or list(words)
        if op == "contains":
            pieces = [c[i:j] for c in choices for i in range(len(c)) for j in range(i + 1, len(c) + 1)][:60]
            return st.one_of(
                st.sampled_from(pieces).map(lambda s: s.upper() if len(s) % 2 else s),
                st.sampled_from(["", "%", "_", "pend%", "o_t", "ſ", "K"]),
                st.text(max_size=4),
            )
        one = st.sampled_from(choices)
        return st.lists(one, min_size=1, max_size=3) if op in ("in", "not_in") else one
    one = number_strategy(values, fact.type)
    if op == "between":
        return st.lists(one, min_size=2, max_size=2).map(sorted)
    if op in ("in", "not_in"):
        return st.lists(one, min_size=1, max_size=4)
    return one


def tree_strategy(
    values: dict[str, list[Any]], max_depth: int = 4, *, facts: list[Any] = FACTS, words: Sequence[str] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """Random condition trees over ``facts`` (a subject type's), thresholds from and around ``values``."""

    @st.composite
    def leaf(draw):
        fact = draw(st.sampled_from(facts))
        op = draw(st.sampled_from(operators_for(fact.type)))
        value = draw(value_strategy(fact, op, values[fact.name], words))
        return {"fact": fact.name, "op": op, "value": value}

    level: st.SearchStrategy[dict[str, Any]] = leaf()
    for _ in range(max_depth - 1):
        child = level
        level = st.one_of(
            leaf(),
            st.lists(child, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
            st.lists(child, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
            child.map(lambda x: {"not": x}),
        )
    return level


def python_outcomes(
    tree: dict[str, Any], max_age: dt.timedelta | None, subject_type: str = "change_order"
) -> dict[int, str]:
    condition = compile_condition(tree, subject_type)
    return {
        ctx.subject_id: condition.matches(ctx.values, ages=ctx.ages, max_age=max_age).value
        for ctx in compute_contexts(subject_type, now=NOW)
    }


def assert_agree(
    tree: dict[str, Any], max_age: dt.timedelta | None, subject_type: str = "change_order"
) -> dict[int, str]:
    """The SQL outcomes and matching ids of ``tree`` are the evaluator's; returns its outcomes."""
    expected = python_outcomes(tree, max_age, subject_type)
    got = batch_outcomes(tree, subject_type, now=NOW, max_age=max_age)
    assert got == expected, (tree, max_age)
    matched = sorted(sid for sid, outcome in expected.items() if outcome == "matched")
    assert matching_ids(tree, subject_type, now=NOW, max_age=max_age) == matched, (tree, max_age)
    return expected


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# --- the properties --------------------------------------------------------------------------------


def test_sql_agrees_with_the_evaluator_on_random_trees():
    build_fixed_data()
    values = observed_values()
    outcomes_seen: set[str] = set()

    @PROPERTY
    @given(tree=tree_strategy(values), max_age=st.sampled_from(MAX_AGES))
    def check(tree, max_age):
        outcomes_seen.update(assert_agree(tree, max_age).values())

    check()
    # The trees were not all trivially one outcome.
    assert outcomes_seen == {"matched", "not_matched", "insufficient_data"}


def leaf_cases(
    values: dict[str, list[Any]],
    *,
    facts: list[Any] = FACTS,
    words: Sequence[str] = (),
    contains: Sequence[str] = ("PEND", "on_", "e", "x", ""),
) -> list[dict[str, Any]]:
    """Every operator of every fact against every observed value (and its neighbours); ``words`` are the
    values of a text fact without choices, ``contains`` what ``contains`` looks for."""
    cases: list[dict[str, Any]] = []
    for fact in facts:
        seen = sorted(values[fact.name], key=repr)
        for op in operators_for(fact.type):
            if op in ("is", "is_null") or fact.type is FactType.BOOL:
                candidates: list[Any] = [True, False]
            elif fact.type is FactType.TEXT:
                candidates = (list(fact.choices) or list(words)) if op != "contains" else list(contains)
            elif fact.type is FactType.INT:
                candidates = sorted({int(v) + d for v in seen for d in (-1, 0, 1)})
            else:
                candidates = sorted(
                    {Decimal(v) + d for v in seen for d in (Decimal("-0.01"), 0, Decimal("0.01"))}
                )
            for v in candidates:
                if op == "between":
                    lows = [c for c in candidates if c <= v][-2:]
                    cases += [{"fact": fact.name, "op": op, "value": [low, v]} for low in lows]
                elif op in ("in", "not_in"):
                    cases.append({"fact": fact.name, "op": op, "value": [v]})
                    cases.append({"fact": fact.name, "op": op, "value": [v, candidates[0]]})
                else:
                    cases.append({"fact": fact.name, "op": op, "value": v})
    return cases


def assert_cases_agree(cases: list[dict[str, Any]], subject_type: str = "change_order") -> None:
    """Every case, under every staleness limit, decided by one batch query as the evaluator decides it."""
    contexts = list(compute_contexts(subject_type, now=NOW))
    for max_age in MAX_AGES:
        for start in range(0, len(cases), 400):
            chunk = cases[start : start + 400]
            rules = [RuleQuery(tree, subject_type, max_age) for tree in chunk]
            got = batch_outcomes_many(rules, subject_type, now=NOW)
            for tree, outcomes in zip(chunk, got, strict=True):
                condition = compile_condition(tree, subject_type)
                expected = {
                    c.subject_id: condition.matches(c.values, ages=c.ages, max_age=max_age).value
                    for c in contexts
                }
                assert outcomes == expected, (tree, max_age)


def test_every_operator_of_every_fact_agrees_with_the_evaluator_on_the_boundaries():
    build_fixed_data()
    cases = leaf_cases(observed_values())
    assert len(cases) > 300
    assert_cases_agree(cases)


@st.composite
def company(draw):
    """A few clients, projects and change orders with nullable everything."""
    spec = []
    for _ in range(draw(st.integers(1, 3))):
        client = {
            "exists": draw(st.booleans()),
            "renewal": draw(st.one_of(st.none(), st.integers(-30, 120))),
        }
        projects = []
        for _ in range(draw(st.integers(1, 2))):
            projects.append(
                {
                    "contract": draw(st.sampled_from([None, "0", "250000", "1000000"])),
                    "status": draw(st.sampled_from(["", "on_track", "at_risk", "behind"])),
                    "income": draw(st.lists(st.sampled_from(["0", "1000", "50000", "120000"]), max_size=2)),
                    "cost": draw(st.lists(st.sampled_from(["500", "45000", "130000"]), max_size=2)),
                    "milestones": draw(
                        st.lists(
                            st.tuples(st.integers(-5, 40), st.one_of(st.none(), st.integers(-10, 10))),
                            max_size=2,
                        )
                    ),
                    "cos": draw(
                        st.lists(
                            st.tuples(
                                st.sampled_from(["0", "999.99", "50000", "75000.5"]),
                                st.sampled_from(["draft", "pending", "approved", "rejected", "void"]),
                                st.integers(0, 60),
                            ),
                            min_size=1,
                            max_size=3,
                        )
                    ),
                }
            )
        spec.append((client, projects))
    return spec


def build_company(spec) -> None:
    for client_spec, projects in spec:
        client = None
        if client_spec["exists"]:
            renewal = client_spec["renewal"]
            client = ClientFactory(
                renewal_date=None if renewal is None else TODAY + dt.timedelta(days=renewal)
            )
        for p in projects:
            project = ProjectFactory(
                client=client,
                contract_value=None if p["contract"] is None else Decimal(p["contract"]),
                schedule_status=p["status"],
            )
            for amount in p["income"]:
                FinancialLineFactory(project=project, kind="invoice", amount=Decimal(amount))
            for amount in p["cost"]:
                FinancialLineFactory(project=project, kind="bill", amount=Decimal(amount))
            for due, completed in p["milestones"]:
                MilestoneFactory(
                    project=project,
                    due_date=days_ago(due),
                    completed_date=None
                    if completed is None
                    else days_ago(due) + dt.timedelta(days=completed),
                )
            for amount, status, age in p["cos"]:
                ChangeOrderFactory(
                    project=project, amount=Decimal(amount), status=status,
                    created_upstream_at=NOW - dt.timedelta(days=age),
                )  # fmt: skip


class _Rollback(Exception):
    pass


def test_sql_agrees_with_the_evaluator_on_random_data():
    streams({"change_order": dt.timedelta(minutes=5), "project": dt.timedelta(hours=2)})
    # Thresholds from a representative spread of values; the data itself varies per example.
    values: dict[str, list[Any]] = {f.name: [] for f in FACTS}
    for name, vs in {
        "change_order.amount": ["0", "999.99", "50000", "75000.5"],
        "change_order.amount_pct_of_contract": ["0.0999", "5", "20", "30.0002"],
        "change_order.age_days": [0, 29, 30, 60],
        "project.contract_value": ["0", "250000", "1000000"],
        "project.income_to_date": ["0", "1000", "51000", "120000"],
        "project.cost_to_date": ["0", "500", "45500", "130000"],
        "project.margin_pct": ["-30", "0", "12", "50", "99.5833"],
        "project.change_orders_30d": [0, 1, 3],
        "project.change_order_amount_30d": ["0", "50000", "125000.5"],
        "project.milestones_missed": [0, 1, 2],
        "project.days_behind_schedule": [0, 5, 40],
        "client.days_to_renewal": [-30, 0, 60, 120],
        "client.ar_overdue_amount": ["0"],
        "client.open_escalations": [0],
    }.items():
        values[name] = [v if isinstance(v, int) else Decimal(v) for v in vs]

    @settings(PROPERTY, max_examples=20)
    @given(
        spec=company(),
        trees=st.lists(tree_strategy(values, max_depth=3), min_size=3, max_size=3),
        max_age=st.sampled_from(MAX_AGES),
    )
    def check(spec, trees, max_age):
        try:
            with transaction.atomic():
                build_company(spec)
                for tree in trees:
                    assert_agree(tree, max_age)
                # The multi-rule query agrees with the one-rule queries.
                compiled = [compile_condition(t, "change_order") for t in trees]
                many = batch_outcomes_many(compiled, "change_order", now=NOW)
                assert many == [python_outcomes(t, None) for t in trees]
                raise _Rollback
        except _Rollback:
            pass

    check()


# --- examples --------------------------------------------------------------------------------------


def one_co(**project_kw):
    client = ClientFactory(renewal_date=TODAY + dt.timedelta(days=30))
    project = ProjectFactory(client=client, **project_kw)
    return ChangeOrderFactory(project=project, amount=Decimal("60000.00"), status="pending")


def test_null_fact_is_insufficient_data_and_is_null_answers_from_presence():
    co = one_co()  # no invoices: margin is null
    margin_lt = {"fact": "project.margin_pct", "op": "lt", "value": 12}
    assert batch_outcomes(margin_lt, "change_order", now=NOW) == {co.pk: "insufficient_data"}
    no_margin = {"fact": "project.margin_pct", "op": "is_null", "value": True}
    assert batch_outcomes(no_margin, "change_order", now=NOW) == {co.pk: "matched"}
    # Kleene: FALSE AND unknown is FALSE; TRUE OR unknown is TRUE.
    small = {"fact": "change_order.amount", "op": "lt", "value": 1}
    assert batch_outcomes({"all": [small, margin_lt]}, "change_order", now=NOW) == {co.pk: "not_matched"}
    assert batch_outcomes({"any": [{"not": small}, margin_lt]}, "change_order", now=NOW) == {co.pk: "matched"}
    assert batch_outcomes({"not": margin_lt}, "change_order", now=NOW) == {co.pk: "insufficient_data"}


def test_one_rule_names_the_subjects_its_filter_leaves_out():
    """One rule's query keeps only the rows where no top-level conjunct is FALSE (``IS NOT FALSE`` per
    conjunct, so PostgreSQL drops subjects before the later joins) and takes every subject from a second
    read of the facts: a subject left out is not matched, an unknown conjunct beside a FALSE one is not
    matched, and the outcomes are those of the several-rule query, which reads every row."""
    streams({"change_order": dt.timedelta(minutes=5), "project": dt.timedelta(hours=3)})
    unknown = one_co()  # no invoices: margin unknown; renewal in 30 days
    small = one_co()
    small.amount = Decimal("100.00")  # amount FALSE beside an unknown margin: not matched
    small.save()
    matched = one_co()
    FinancialLineFactory(project=matched.project, kind="invoice", amount=Decimal("1000.00"))
    FinancialLineFactory(project=matched.project, kind="bill", amount=Decimal("950.00"))  # margin 5
    spec_rule = {"all": [
        {"fact": "change_order.amount", "op": "gte", "value": 50000},
        {"fact": "project.margin_pct", "op": "lt", "value": 12},
        {"any": [{"fact": "client.missed_last_milestone", "op": "is", "value": True},
                 {"fact": "client.days_to_renewal", "op": "lte", "value": 60}]},
    ]}  # fmt: skip
    expected = {unknown.pk: "insufficient_data", small.pk: "not_matched", matched.pk: "matched"}
    with CaptureQueriesContext(connection) as queries:
        got = batch_outcomes(spec_rule, "change_order", now=NOW)
    assert got == expected and list(got) == sorted(expected)
    [query] = queries.captured_queries
    assert query["sql"].count("IS NOT FALSE") == 3
    rule = RuleQuery(spec_rule, "change_order")
    assert batch_outcomes_many([rule, rule], "change_order", now=NOW) == [expected, expected]
    assert batch_outcomes(spec_rule, "change_order", [small.pk, unknown.pk], NOW) == {
        unknown.pk: "insufficient_data",
        small.pk: "not_matched",
    }
    # A stale fact is unknown in the filter too; a top-level ``not`` or ``any`` is one conjunct.
    stale = batch_outcomes(spec_rule, "change_order", now=NOW, max_age=dt.timedelta(hours=1))
    assert stale == {
        unknown.pk: "insufficient_data",
        small.pk: "not_matched",
        matched.pk: "insufficient_data",
    }
    negated = {"not": spec_rule}
    assert batch_outcomes(negated, "change_order", now=NOW) == {
        unknown.pk: "insufficient_data",
        small.pk: "matched",
        matched.pk: "not_matched",
    }
    for tree in (negated, spec_rule["all"][2], {"any": spec_rule["all"][:2]}):
        one = batch_outcomes(tree, "change_order", now=NOW)
        assert [one, one] == batch_outcomes_many(
            [RuleQuery(tree, "change_order")] * 2, "change_order", now=NOW
        )
        assert one == python_outcomes(tree, None)


def test_stale_facts_are_unknown_even_for_is_null():
    streams({"change_order": dt.timedelta(hours=30), "project": dt.timedelta(minutes=1)})
    co = one_co()
    tree = {"fact": "change_order.amount", "op": "is_null", "value": False}
    assert batch_outcomes(tree, "change_order", now=NOW) == {co.pk: "matched"}
    assert batch_outcomes(tree, "change_order", now=NOW, max_age=dt.timedelta(hours=24)) == {
        co.pk: "insufficient_data"
    }
    assert batch_outcomes(tree, "change_order", now=NOW, max_age=dt.timedelta(hours=48)) == {co.pk: "matched"}
    fresh = {"fact": "project.contract_value", "op": "gt", "value": 0}
    assert batch_outcomes(fresh, "change_order", now=NOW, max_age=dt.timedelta(hours=1)) == {co.pk: "matched"}


def test_values_are_parameters_and_contains_is_no_pattern():
    co = one_co()
    for needle, expected in [
        ("PEND", "matched"),
        ("%", "not_matched"),
        ("p_nding", "not_matched"),
        ("", "matched"),
    ]:
        tree = {"fact": "change_order.status", "op": "contains", "value": needle}
        assert batch_outcomes(tree, "change_order", now=NOW) == {co.pk: expected}, needle
    hostile = "x'); DROP TABLE entities_changeorder; --"
    sql, params = outcomes_sql(
        "change_order", {"fact": "change_order.status", "op": "contains", "value": hostile}
    )
    assert "drop" not in sql.lower() and hostile.casefold() in params.values()
    assert batch_outcomes({"fact": "change_order.status", "op": "in", "value": ["pending", "void"]},
                          "change_order", now=NOW) == {co.pk: "matched"}  # fmt: skip
    assert batch_outcomes({"fact": "change_order.amount", "op": "between", "value": [60000, "60000.00"]},
                          "change_order", now=NOW) == {co.pk: "matched"}  # fmt: skip


def test_invalid_trees_and_invisible_facts_are_refused():
    with pytest.raises(RuleValidationError):
        condition_sql({"fact": "change_order.amount", "op": "contains", "value": "1"}, "change_order")
    with pytest.raises(RuleValidationError):
        condition_sql({"fact": "change_order.amount", "op": "gt", "value": 1}, "project")
    with pytest.raises(RuleValidationError):
        condition_sql({"fact": 'x" OR 1=1 --', "op": "gt", "value": 1}, "change_order")


def test_batch_outcomes_of_a_published_version_uses_its_subject_and_max_age():
    streams({e: dt.timedelta(minutes=5) for e in ENTITY_STREAMS})
    co = one_co()
    other = one_co()
    rules_import(
        text="""
- key: big
  name: Big
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: 50000}
      - {fact: client.days_to_renewal, op: lte, value: 60}
  max_fact_age: 1h
""",
        actor="system:test",
    )
    from apps.rules.models import Rule

    version = Rule.objects.get(key="big").live_version
    assert batch_outcomes(version, now=NOW) == {co.pk: "matched", other.pk: "matched"}
    assert batch_outcomes(version, ids=[other.pk], now=NOW) == {other.pk: "matched"}
    assert batch_outcomes(version, ids=[], now=NOW) == {}
    [strict] = parse_rules(
        "- {key: b, name: B, subject: change_order, max_fact_age: 1m, "
        "when: {fact: change_order.amount, op: gt, value: 0}}"
    )
    assert batch_outcomes(strict, now=NOW) == {co.pk: "insufficient_data", other.pk: "insufficient_data"}
    with pytest.raises(ValueError, match="not project"):
        batch_outcomes(version, "project", now=NOW)
    assert Verdict.MATCHED.value == "matched"
