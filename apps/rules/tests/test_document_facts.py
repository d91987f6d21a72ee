"""Facts of documents processed by AI tools (SPEC "AI tools as sources"), and the SQL/Python agreement
property extended to the ``document`` subject: random condition trees over every fact a document sees
(its own, its project's, its client's), on data covering every way a document fact can be null, zero or
on a boundary (no amount, no link, a change order or only an invoice, a zero record amount, confidence at
the low-confidence limit, documents older than 30 days), compiled to SQL and evaluated per subject."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.rules.engine.catalogue import facts_for
from apps.rules.evaluation.facts import compute_contexts
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    DocumentFactory,
    FinancialLineFactory,
    ProjectFactory,
)

from .test_sql import (
    MAX_AGES,
    NOW,
    PROPERTY,
    assert_agree,
    assert_cases_agree,
    leaf_cases,
    observed_values,
    streams,
    tree_strategy,
)

pytestmark = pytest.mark.django_db

FACTS = facts_for("document")
LABELS = ["invoice", "change_order_request", "submittal_package"]


def build_documents() -> dict[str, Any]:
    streams(
        {
            "document": dt.timedelta(minutes=5),
            "change_order": dt.timedelta(minutes=10),
            "project": dt.timedelta(hours=1),
            "financial_line": dt.timedelta(hours=2),
            "client": None,
        }
    )
    client = ClientFactory()
    thin = ProjectFactory(client=client)
    FinancialLineFactory(project=thin, kind="invoice", amount=Decimal("100000.00"))
    FinancialLineFactory(project=thin, kind="bill", amount=Decimal("91000.00"))  # margin 9
    fat = ProjectFactory(client=None)
    FinancialLineFactory(project=fat, kind="invoice", amount=Decimal("100000.00"))
    co = ChangeOrderFactory(project=thin, amount=Decimal("51200.00"))
    zero = ChangeOrderFactory(project=fat, amount=Decimal("0.00"))
    invoice = FinancialLineFactory(project=fat, kind="invoice", amount=Decimal("2000.00"))
    old = NOW - dt.timedelta(days=31)
    made = {
        "delta15": DocumentFactory(
            label="change_order_request", amount=Decimal("58880.00"), confidence=0.97,
            project=thin, client=client, change_order=co, analyzed_at=NOW - dt.timedelta(days=2),
        ),
        "delta9": DocumentFactory(
            label="change_order_request", amount=Decimal("55808.00"), confidence=0.8,
            project=thin, change_order=co, analyzed_at=NOW - dt.timedelta(days=1),
        ),
        "low": DocumentFactory(label="invoice", amount=None, confidence=0.62, project=thin, analyzed_at=NOW),
        "old_low": DocumentFactory(label="invoice", confidence=0.5, project=thin, analyzed_at=old),
        "on_invoice": DocumentFactory(
            label="invoice", amount=Decimal("1500.00"), project=fat, invoice=invoice
        ),
        "zero_record": DocumentFactory(label="change_order_request", project=fat, change_order=zero),
        "unlinked": DocumentFactory(label="", confidence=None, amount=Decimal("12780.00")),
    }  # fmt: skip
    return {"documents": made, "change_order": co, "thin": thin}


def test_document_facts_read_what_the_tool_said_and_the_system_of_record() -> None:
    data = build_documents()
    docs = data["documents"]
    contexts = {c.subject_id: c.values for c in compute_contexts("document", now=NOW)}

    delta15 = contexts[docs["delta15"].pk]
    assert delta15["document.label"] == "change_order_request"
    assert delta15["document.confidence"] == Decimal("0.97")
    assert delta15["document.amount"] == Decimal("58880.00")
    assert delta15["document.linked"] is True
    assert delta15["document.amount_delta_pct"] == Decimal("15.0000")
    assert delta15["project.margin_pct"] == Decimal("9.0000")
    # Low-confidence documents of the project in the last 30 days: 0.62 counts, 0.8 does not, 31 days ago not.
    assert delta15["project.documents_low_confidence_30d"] == 1
    assert contexts[docs["delta9"].pk]["document.amount_delta_pct"] == Decimal("9.0000")
    assert contexts[docs["low"].pk]["document.amount_delta_pct"] is None  # no extracted amount
    assert contexts[docs["on_invoice"].pk]["document.amount_delta_pct"] == Decimal("25.0000")
    assert contexts[docs["zero_record"].pk]["document.amount_delta_pct"] is None  # record amount 0
    unlinked = contexts[docs["unlinked"].pk]
    assert unlinked["document.linked"] is False and unlinked["document.label"] is None
    assert unlinked["document.confidence"] is None and unlinked["project.margin_pct"] is None
    # A change order sees the largest difference among its documents.
    [co] = compute_contexts("change_order", [data["change_order"].pk], now=NOW)
    assert co.values["change_order.document_amount_delta_pct"] == Decimal("15.0000")
    assert co.ages["change_order.document_amount_delta_pct"] == pytest.approx(600.0)


def test_sql_agrees_with_the_evaluator_on_documents() -> None:
    build_documents()
    values = observed_values("document", FACTS)
    outcomes_seen: set[str] = set()

    @PROPERTY
    @given(tree=tree_strategy(values, 3, facts=FACTS, words=LABELS), max_age=st.sampled_from(MAX_AGES))
    def check(tree: dict[str, Any], max_age: dt.timedelta | None) -> None:
        outcomes_seen.update(assert_agree(tree, max_age, "document").values())

    check()
    assert outcomes_seen == {"matched", "not_matched", "insufficient_data"}


def test_every_operator_of_every_document_fact_agrees_on_the_boundaries() -> None:
    build_documents()
    cases = leaf_cases(
        observed_values("document", FACTS), facts=FACTS, words=LABELS, contains=("CHANGE", "e", "")
    )
    assert len(cases) > 100
    assert_cases_agree(cases, "document")
