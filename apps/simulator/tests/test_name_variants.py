"""Cross-system name variants: accounting spells some clients differently from the CRM, on another domain,
so that entity resolution has work in the demo (auto-links and a review queue), and nothing else changes."""

from __future__ import annotations

import datetime as dt

import pytest
from rapidfuzz import fuzz

from apps.entities.resolution import normalise_name
from apps.simulator import generate_company
from apps.simulator.planted import vendor_records
from apps.simulator.variants import name_similarity

from .conftest import NOW, TODAY


def score(a: str, b: str) -> float:
    """Resolution's own score (apps.entities.resolution: token_sort_ratio over normalised names)."""
    return fuzz.token_sort_ratio(normalise_name(a), normalise_name(b))


@pytest.mark.parametrize("scale", [0.25, 1.0])
def test_each_variant_lands_where_resolution_will_put_it(scale: float) -> None:
    company = generate_company(seed=42, scale=scale, today=TODAY, now=NOW, name_variants=True)
    variants = company.planted["name_variants"]
    assert variants and {v["expected"] for v in variants} <= {"auto_link", "review"}
    hubspot_names = [h.name for h in company.hs_companies.values()]
    domains = {h.domain for h in company.hs_companies.values()}
    for v in variants:
        own = score(v["hubspot_name"], v["quickbooks_name"])
        runner_up = max(score(n, v["quickbooks_name"]) for n in hubspot_names if n != v["hubspot_name"])
        if v["expected"] == "auto_link":
            assert own >= 92 and own - runner_up >= 5, v
        else:
            assert 75 <= own < 92, v
        customer = company.qbo_customers[v["quickbooks_id"]]
        assert customer.display_name == customer.company_name == v["quickbooks_name"]
        assert customer.web is None and customer.email.split("@")[1] not in domains  # no exact key
        assert company.hs_companies[v["hubspot_id"]].name == v["hubspot_name"]
        jobs = [c for c in company.qbo_customers.values() if c.parent_id == customer.id]
        assert all(j.fully_qualified_name.startswith(v["quickbooks_name"] + ":") for j in jobs)
    if scale == 1.0:
        assert {v["expected"] for v in variants} == {"auto_link", "review"}


def test_the_stdlib_similarity_is_resolutions_score() -> None:
    pairs = [
        ("Summit Builders", "SUMMIT BUILDERS, INC."),
        ("Cascade Construction", "Cascade Constr."),
        ("Riverside Medical Center", "Riverside Med Ctr"),
        ("Northstar Development Group", "Northstar Development Group Billing"),
        ("Acme & Sons", "Acme and Sons LLC"),
    ]
    for a, b in pairs:
        assert name_similarity(a, b) * 100 == pytest.approx(score(a, b), abs=0.01), (a, b)


def test_variants_change_nothing_else_and_leave_planted_clients_alone() -> None:
    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    plain = generate_company(seed=7, scale=0.5, today=TODAY, now=now)
    varied = generate_company(seed=7, scale=0.5, today=TODAY, now=now, name_variants=True)
    changed = {v["quickbooks_id"] for v in varied.planted["name_variants"]}
    assert changed
    assert {k: v for k, v in varied.planted.items() if k != "name_variants"} == plain.planted
    plain_records, varied_records = vendor_records(plain), vendor_records(varied)
    assert plain_records.keys() == varied_records.keys()
    protected = {str(key) for system, kind, key in varied.protected if kind == "customer"}
    assert not changed & protected
    for key in plain.qbo_customers:
        if key not in changed and plain.qbo_customers[key].parent_id not in changed:
            assert plain.qbo_customers[key] == varied.qbo_customers[key]
    assert plain.hs_companies == varied.hs_companies
    assert plain.pc_projects == varied.pc_projects
