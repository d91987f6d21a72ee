from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from apps.simulator import PLANTED, expected_matches
from apps.simulator.planted import AMOUNT, CLIENT, MARGIN, compute_facts, evaluate, vendor_records

from .conftest import TODAY, Client, make_company
from .helpers import hubspot_all, procore_all, qbo_all


def _ids(company_planted: dict, section: str) -> set[int]:
    return {entry["procore_change_order_id"] for entry in company_planted[section]}


@pytest.mark.parametrize("seed", [42, 7])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_oracle_equals_planted_matches(seed: int, scale: float) -> None:
    company = make_company(scale=scale, seed=seed)
    matches, insufficient = evaluate(vendor_records(company), TODAY)
    assert matches == _ids(company.planted, "matches")
    assert insufficient == _ids(company.planted, "insufficient")
    assert not (_ids(company.planted, "near_misses") & (matches | insufficient))


def test_planted_shape_and_mix() -> None:
    company = make_company(scale=1.0)
    planted = company.planted
    assert planted["rule"] == "co-exec-review"
    matches = planted["matches"]
    assert len(matches) == 12
    assert len({m["client_name"] for m in matches}) == 6
    assert len({m["project_number"] for m in matches}) == 8
    assert len(planted["near_misses"]) == 12
    assert len(planted["insufficient"]) == 2
    assert {"50000.00"} <= {m["amount"] for m in matches}
    assert {"49999.99"} <= {m["amount"] for m in planted["near_misses"]}
    for entry in matches + planted["near_misses"] + planted["insufficient"]:
        assert set(entry) >= {"procore_change_order_id", "client_name", "project_number", "reason"}
        assert entry["procore_change_order_id"] in company.pc_change_orders
    owners = {c["name"]: c["owner_email"] for c in planted["clients"]}
    assert owners["Harborview Medical Partners"] == "maria.chen@fulcrum-demo.test"
    assert owners["Northgate Logistics Group"] == "james.okafor@fulcrum-demo.test"
    assert len(planted["clients"]) == len(PLANTED)


def test_matches_mix_reasons_and_boundaries() -> None:
    company = make_company(scale=1.0)
    facts = compute_facts(vendor_records(company), TODAY)
    matched = [facts[i] for i in _ids(company.planted, "matches")]
    via_milestone = [f for f in matched if f.missed_last_milestone is True]
    via_renewal = [f for f in matched if f.days_to_renewal is not None and f.days_to_renewal <= 60]
    both = [f for f in via_milestone if f in via_renewal]
    assert via_milestone and via_renewal and both
    assert len(via_milestone) > len(both) and len(via_renewal) > len(both)
    assert any(f.amount == Decimal("50000.00") for f in matched)
    assert any(f.days_to_renewal == 60 for f in matched)


def test_each_near_miss_fails_exactly_its_condition() -> None:
    company = make_company(scale=1.0)
    facts = compute_facts(vendor_records(company), TODAY)
    names = (AMOUNT, MARGIN, CLIENT)
    for entry in company.planted["near_misses"]:
        parts = facts[entry["procore_change_order_id"]].conditions()
        failing = [name for name, value in zip(names, parts, strict=True) if value is False]
        assert failing == [entry["failing_condition"]], entry
        assert None not in parts, entry  # a near miss is decided, not insufficient
    margins = {facts[e["procore_change_order_id"]].margin_pct for e in company.planted["near_misses"]}
    assert Decimal(12) in margins and Decimal("12.3") in margins
    renewals = {facts[e["procore_change_order_id"]].days_to_renewal for e in company.planted["near_misses"]}
    assert 61 in renewals


def test_insufficient_entries_have_null_facts() -> None:
    company = make_company(scale=1.0)
    facts = compute_facts(vendor_records(company), TODAY)
    by_client = {
        e["client_name"]: facts[e["procore_change_order_id"]] for e in company.planted["insufficient"]
    }
    assert by_client["Foxglove Botanical Gardens"].margin_pct is None
    aurora = by_client["Aurora Ridge Observatory"]
    assert aurora.missed_last_milestone is None and aurora.days_to_renewal is None


def test_background_makes_every_single_condition_common() -> None:
    company = make_company(scale=1.0)
    facts = compute_facts(vendor_records(company), TODAY)
    planted = set().union(*(_ids(company.planted, s) for s in ("matches", "near_misses", "insufficient")))
    background = [f for cid, f in facts.items() if cid not in planted]
    truth = Counter()
    for f in background:
        for name, value in zip((AMOUNT, MARGIN, CLIENT), f.conditions(), strict=True):
            truth[name] += value is True
    assert truth[AMOUNT] > 300 and truth[MARGIN] > 300 and truth[CLIENT] > 300
    pairs = Counter((f.conditions()[0], f.conditions()[1]) for f in background)
    assert pairs[(True, False)] > 100  # big change orders on healthy projects
    assert pairs[(False, True)] > 100  # small change orders on thin projects
    assert sum(1 for f in background if f.conditions()[2] and f.conditions()[1] is False) > 100
    assert all(f.outcome() is False for f in background)


def test_oracle_reacts_to_data() -> None:
    """The oracle reads the records, not the planted list: change a record and the answer changes."""
    company = make_company(scale=0.1)
    target = company.planted["matches"][0]["procore_change_order_id"]
    company.pc_change_orders[target].grand_total = 4_999_999
    near = next(e for e in company.planted["near_misses"] if e["failing_condition"] == AMOUNT)
    company.pc_change_orders[near["procore_change_order_id"]].grand_total = 5_000_000
    result = expected_matches(company)
    assert target not in result
    assert near["procore_change_order_id"] in result


def test_planted_survives_mutation() -> None:
    company = make_company(scale=0.3)
    before = expected_matches(company)
    company.mutate(fraction=0.5, seed=3)
    assert expected_matches(company) == before == _ids(company.planted, "matches")


def test_oracle_over_http_equals_planted(client: Client) -> None:
    """Sync everything through the three APIs like a connector and recompute the rule."""
    records = {
        "hubspot_companies": hubspot_all(client),
        "qbo_customers": qbo_all(client, "Customer"),
        "qbo_invoices": qbo_all(client, "Invoice"),
        "qbo_bills": qbo_all(client, "Bill"),
        "qbo_purchases": qbo_all(client, "Purchase"),
        "pc_projects": procore_all(client, "/rest/v1.0/projects?company_id=4242&per_page=1000"),
        "pc_tasks": [],
        "pc_change_orders": [],
    }
    # Tasks and change order packages are listed per project; their JSON has no project_id.
    for project in records["pc_projects"]:
        pid = project["id"]
        for task in procore_all(client, f"/rest/v1.0/tasks?project_id={pid}&per_page=1000"):
            records["pc_tasks"].append({**task, "project_id": pid})
        for co in procore_all(client, f"/rest/v1.0/change_order_packages?project_id={pid}&per_page=1000"):
            records["pc_change_orders"].append({**co, "project_id": pid})
    company = client.server.company
    assert len(records["pc_change_orders"]) == len(company.pc_change_orders)
    matches, insufficient = evaluate(records, TODAY)
    planted = client.session.get(client.base + "/_sim/planted").json()
    assert matches == _ids(planted, "matches")
    assert insufficient == _ids(planted, "insufficient")
