"""The fact catalogue matches the SPEC table: names, types, units, choices, visibility, operators."""

from __future__ import annotations

import json

import pytest

from apps.rules.engine.catalogue import (
    FACTS,
    OPERATOR_LABELS,
    OPERATORS,
    SOURCES,
    SUBJECT_TYPES,
    VISIBLE,
    Fact,
    FactType,
    _index,
    facts_for,
    is_visible,
    operators_for,
)

# The SPEC "Subjects and facts" table: name → type.
SPEC_FACTS = {
    "change_order.amount": "money",
    "change_order.amount_pct_of_contract": "percent",
    "change_order.status": "text",
    "change_order.age_days": "int",
    "project.contract_value": "money",
    "project.income_to_date": "money",
    "project.cost_to_date": "money",
    "project.margin_pct": "percent",
    "project.change_orders_30d": "int",
    "project.change_order_amount_30d": "money",
    "project.milestones_missed": "int",
    "project.days_behind_schedule": "int",
    "project.schedule_status": "text",
    "client.days_to_renewal": "int",
    "client.missed_last_milestone": "bool",
    "client.ar_overdue_amount": "money",
    "client.open_escalations": "int",
    "submittal.revision": "int",
    "submittal.days_overdue": "int",
    "submittal.schedule_critical": "bool",
    "vendor.late_submittal_rate": "percent",
}


# Facts Fulcrum adds to SPEC's table (extensions, never changes of a SPEC fact).
EXTENSIONS = {"project.data_quality_errors": "int"}
# SPEC "AI tools as sources": named there, typed here.
AI_FACTS = {
    "document.label": "text",
    "document.confidence": "score",
    "document.amount": "money",
    "document.linked": "bool",
    "document.amount_delta_pct": "percent",
    "project.documents_low_confidence_30d": "int",
    "change_order.document_amount_delta_pct": "percent",
}


def test_every_spec_fact_is_in_the_catalogue_with_its_type() -> None:
    assert {name: fact.type.value for name, fact in FACTS.items()} == SPEC_FACTS | EXTENSIONS | AI_FACTS


def test_fact_type_is_a_str_enum() -> None:
    assert FactType("money") is FactType.MONEY
    assert isinstance(FactType.MONEY, str)
    assert FactType.MONEY.value == "money"
    assert str(FactType.PERCENT) == "percent"


@pytest.mark.parametrize("name", sorted(SPEC_FACTS))
def test_each_fact_has_unit_description_source_and_subject(name: str) -> None:
    fact = FACTS[name]
    assert fact.name == name
    assert fact.subject == name.split(".")[0]
    assert fact.description
    assert fact.source in SOURCES
    expected_unit = {"money": "USD", "percent": "%", "text": "", "bool": ""}.get(fact.type.value)
    if expected_unit is not None:
        assert fact.unit == expected_unit
    else:
        assert fact.unit in ("days", "count", "")


def test_day_counts_are_in_days() -> None:
    days = {n for n, f in FACTS.items() if f.unit == "days"}
    assert days == {
        "change_order.age_days",
        "project.days_behind_schedule",
        "client.days_to_renewal",
        "submittal.days_overdue",
    }


def test_text_facts_carry_their_choices() -> None:
    assert FACTS["change_order.status"].choices == ("draft", "pending", "approved", "rejected", "void")
    assert FACTS["project.schedule_status"].choices == ("on_track", "at_risk", "behind")
    assert all(not f.choices for f in FACTS.values() if f.type is not FactType.TEXT)


def test_sources_name_the_system_the_fact_comes_from() -> None:
    assert FACTS["project.income_to_date"].source == "accounting"
    assert FACTS["client.days_to_renewal"].source == "crm"
    assert FACTS["change_order.amount"].source == "pm"
    assert FACTS["client.open_escalations"].source == "fulcrum"


def test_visibility_follows_the_spec() -> None:
    assert SUBJECT_TYPES == ("change_order", "project", "client", "submittal", "document")
    assert VISIBLE == {
        "change_order": ("change_order", "project", "client"),
        "project": ("project", "client"),
        "client": ("client",),
        "submittal": ("submittal", "project", "client", "vendor"),
        "document": ("document", "project", "client"),
    }
    assert {f.subject for f in facts_for("change_order")} == {"change_order", "project", "client"}
    assert {f.subject for f in facts_for("client")} == {"client"}
    assert "vendor.late_submittal_rate" in {f.name for f in facts_for("submittal")}
    assert "vendor.late_submittal_rate" not in {f.name for f in facts_for("change_order")}
    assert facts_for("project")[0].name == "project.contract_value"  # own facts first
    assert is_visible("client.days_to_renewal", "project")
    assert not is_visible("submittal.revision", "project")


def test_every_fact_is_visible_to_some_subject() -> None:
    assert set(FACTS) == {f.name for s in SUBJECT_TYPES for f in facts_for(s)}


def test_facts_for_an_unknown_subject_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown subject type 'invoice'"):
        facts_for("invoice")


@pytest.mark.parametrize(
    ("fact_type", "ops"),
    [
        ("money", "eq ne gt gte lt lte between in not_in is_null"),
        ("percent", "eq ne gt gte lt lte between in not_in is_null"),
        ("int", "eq ne gt gte lt lte between in not_in is_null"),
        ("date", "eq ne gt gte lt lte between in not_in is_null"),
        ("text", "eq ne in not_in contains is_null"),
        ("bool", "is eq ne is_null"),
    ],
)
def test_operators_per_type(fact_type: str, ops: str) -> None:
    assert operators_for(fact_type) == tuple(ops.split())
    assert operators_for(FactType(fact_type)) == tuple(ops.split())


def test_operator_lists_are_consistent() -> None:
    assert set(OPERATORS) == {op for t in FactType for op in operators_for(t)}
    assert set(OPERATOR_LABELS) == set(OPERATORS)


def test_as_dict_is_json_for_admin_pickers() -> None:
    data = FACTS["change_order.status"].as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["choices"] == ["draft", "pending", "approved", "rejected", "void"]
    assert data["operators"] == list(operators_for("text"))
    assert data["subject"] == "change_order"


def test_adding_a_fact_is_one_entry_and_mistakes_are_refused() -> None:
    extra = Fact("project.retainage", FactType.MONEY, "USD", "retainage held", "accounting")
    assert extra.subject == "project"
    assert "project.retainage" in _index((extra,))
    with pytest.raises(ValueError, match="registered twice"):
        _index((extra, extra))
    with pytest.raises(ValueError, match="no subject type sees"):
        _index((Fact("invoice.total", FactType.MONEY, "USD", "x", "accounting"),))
    with pytest.raises(ValueError, match=r"subject\.attribute"):
        Fact("amount", FactType.MONEY, "USD", "x", "pm")
    with pytest.raises(ValueError, match="unknown source"):
        Fact("project.x", FactType.MONEY, "USD", "x", "erp")
    with pytest.raises(ValueError, match="only text facts"):
        Fact("project.x", FactType.INT, "", "x", "pm", choices=("a",))


def test_facts_are_immutable() -> None:
    fact = FACTS["change_order.amount"]
    with pytest.raises(AttributeError):
        fact.unit = "EUR"  # type: ignore[misc]
