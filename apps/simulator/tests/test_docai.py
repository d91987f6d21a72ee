from __future__ import annotations

from decimal import Decimal

from apps.simulator.docai import PLANTED_DOCUMENTS, documents

from .conftest import make_company


def test_analyses_do_not_change_when_their_change_order_is_edited_later() -> None:
    """An analysis, once made, is what the tool read off the document: editing the change order it names
    afterwards (the soak edits amounts) neither changes it nor breaks the listing."""
    company = make_company()
    before = documents(company)
    planted = next(p for p in PLANTED_DOCUMENTS if p.co_amount)
    cents = int(Decimal(planted.co_amount) * 100)
    for co in company.pc_change_orders.values():
        if co.grand_total == cents:
            co.grand_total += 100
    assert documents(company) == before


def test_a_change_order_edited_before_the_first_analysis_leaves_its_reference_empty() -> None:
    company = make_company()
    planted = next(p for p in PLANTED_DOCUMENTS if p.co_amount)
    cents = int(Decimal(planted.co_amount) * 100)
    for co in company.pc_change_orders.values():
        if co.grand_total == cents:
            co.grand_total += 100
    assert len(documents(company)) == len(documents(make_company()))
