from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta

import pytest

from apps.simulator import generate_company
from apps.simulator.common import to_ms
from apps.simulator.planted import vendor_records

from .conftest import NOW, TODAY, make_company


def _dump(company) -> str:
    return json.dumps(
        {
            "records": vendor_records(company),
            "planted": company.planted,
            "owners": [vars(o) if hasattr(o, "__dict__") else repr(o) for o in company.owners.values()],
            "submittals": [repr(s) for s in company.pc_submittals.values()],
            "vendors": [repr(v) for v in company.pc_vendors.values()],
        },
        sort_keys=True,
        default=str,
    )


def test_same_seed_same_company_different_seed_different() -> None:
    assert _dump(make_company(scale=0.3, seed=5)) == _dump(make_company(scale=0.3, seed=5))
    assert _dump(make_company(scale=0.3, seed=5)) != _dump(make_company(scale=0.3, seed=6))


def test_counts_at_scale_one() -> None:
    c = make_company(scale=1.0)
    projects = len(c.pc_projects)
    assert len(c.hs_companies) == 200 and len(c.owners) == 12 and projects == 600
    assert len([t for t in c.pc_tasks.values() if t.milestone]) == 5 * projects
    assert 8 * projects <= len(c.pc_change_orders) <= 12 * projects
    assert 3 * projects <= len(c.pc_submittals) <= 5 * projects
    assert 70 <= len(c.pc_vendors) <= 90 and len(c.qbo_vendors) == len(c.pc_vendors)
    assert 5 * projects <= len(c.qbo_invoices) <= 7 * projects
    assert 4 * projects <= len(c.qbo_bills) <= 6 * projects
    assert 2 * projects <= len(c.qbo_purchases) <= 4 * projects
    assert len(c.qbo_estimates) == projects
    assert all(1 <= len(b.lines) <= 3 for b in c.qbo_bills.values())
    assert len(make_company(scale=2.0).pc_projects) == 1200


def test_three_systems_link_by_origin_id_parent_and_domain() -> None:
    c = make_company(scale=0.5)
    hubspot_domains = {h.domain for h in c.hs_companies.values()}
    for project in c.pc_projects.values():
        job = c.qbo_customers[project.origin_id]
        assert job.is_job and job.display_name == f"{project.project_number} {project.name}"
        parent = c.qbo_customers[job.parent_id or ""]
        assert not parent.is_job and job.fully_qualified_name == f"{parent.display_name}:{job.display_name}"
        assert parent.web and parent.web.removeprefix("https://") in hubspot_domains
        assert parent.email == "ap@" + parent.web.removeprefix("https://")
    names = {h.domain: h.name for h in c.hs_companies.values()}
    for customer in (x for x in c.qbo_customers.values() if not x.is_job):
        assert customer.company_name == names[(customer.web or "").removeprefix("https://")]
    assert {t.project_id for t in c.pc_tasks.values()} == set(c.pc_projects)
    jobs = {x.id for x in c.qbo_customers.values() if x.is_job}
    assert all(i.customer_id in jobs for i in c.qbo_invoices.values())
    charged = [line.job_id for b in c.qbo_bills.values() for line in b.lines]
    assert None in charged and set(charged) - {None} <= jobs  # some overhead lines charge no job


def test_ids_are_unique_across_shared_sequences() -> None:
    c = make_company(scale=0.3)
    names = list(c.qbo_customers) + list(c.qbo_vendors)
    txns = list(c.qbo_invoices) + list(c.qbo_bills) + list(c.qbo_purchases) + list(c.qbo_estimates)
    assert len(set(names)) == len(names) and len(set(txns)) == len(txns)
    assert len({p.project_number for p in c.pc_projects.values()}) == len(c.pc_projects)
    assert len({h.domain for h in c.hs_companies.values()}) == len(c.hs_companies)


def test_timestamps_are_ordered_recent_and_often_shared() -> None:
    c = make_company(scale=1.0)
    now = to_ms(NOW)
    for (system, kind), table in c.tables.items():
        stamps = [r.updated for r in table.values()]
        assert all(r.created <= r.updated < now for r in table.values()), kind
        if system != "hubspot":
            assert all(r.updated % 1000 == 0 for r in table.values()), kind
        if len(table) > 500:
            shared = Counter(stamps).most_common(1)[0][1]
            assert shared >= 5, f"{kind}: no timestamp shared by many records"
            assert min(stamps) < to_ms(NOW - timedelta(days=365)), f"{kind}: not spread over the past"
    assert any(now - r.updated < 60_000 for r in c.pc_change_orders.values())  # some inside the last minute


def test_owners_and_renewals() -> None:
    c = make_company(scale=1.0)
    emails = {o.email for o in c.owners.values()}
    assert {
        "maria.chen@fulcrum-demo.test",
        "james.okafor@fulcrum-demo.test",
        "kevin.obrien@fulcrum-demo.test",
    } <= emails
    renewals = [h.renewal for h in c.hs_companies.values()]
    missing = sum(1 for r in renewals if not r)
    assert None in renewals and "" in renewals and 0.05 * len(renewals) <= missing <= 0.2 * len(renewals)
    soon = sum(1 for r in renewals if r and (TODAY + timedelta(days=60)).isoformat() >= r)
    assert soon >= 20


def test_mutate_is_deterministic_and_bumps_updated() -> None:
    a, b = make_company(scale=0.2), make_company(scale=0.2)
    before = {k: repr(r) for k, r in a.pc_change_orders.items()}
    latest = max(r.updated for t in a.tables.values() for r in t.values())
    touched = a.mutate(fraction=0.05, seed=9)
    assert touched == b.mutate(fraction=0.05, seed=9)
    total = sum(len(t) for (s, k), t in a.tables.items() if k != "owner")
    assert len(touched) == round(total * 0.05)
    stamps = {a.table(s, k)[i].updated for s, k, i in touched}
    assert len(stamps) == 1 and stamps.pop() > latest
    changed = [i for s, k, i in touched if k == "change_order"]
    assert changed and all(repr(a.pc_change_orders[i]) != before[i] for i in changed)
    assert a.mutate(fraction=0.01, seed=9, now=NOW + timedelta(hours=1))
    assert max(r.updated for r in a.pc_change_orders.values()) >= to_ms(NOW + timedelta(hours=1)) - 1000


def test_delete_removes_and_rejects_unknown() -> None:
    c = make_company(scale=0.1)
    project_id = next(iter(c.pc_projects))
    c.delete("procore", "project", str(project_id))
    assert project_id not in c.pc_projects
    assert project_id not in {p.id for p in c.view(c.pc_projects).records}
    c.delete("quickbooks", "Invoice", next(iter(c.qbo_invoices)))
    with pytest.raises(KeyError):
        c.delete("hubspot", "company", "1")
    with pytest.raises(KeyError):
        c.delete("hubspot", "deal", "1")


def test_reset_regenerates_in_place() -> None:
    c = make_company(scale=0.1)
    original = _dump(c)
    c.mutate(fraction=0.2, seed=1)
    c.delete("procore", "change_order", next(iter(c.pc_change_orders)))
    assert _dump(c) != original
    c.reset()
    assert _dump(c) == original


def test_generation_is_fast() -> None:
    started = time.perf_counter()
    company = generate_company(seed=1, scale=3.0, today=TODAY, now=NOW)
    assert time.perf_counter() - started < 4.0  # scale 17 takes ~5 s on a laptop-class machine
    assert len(company.pc_change_orders) > 15_000


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        generate_company(scale=0)
    with pytest.raises(ValueError):
        generate_company(now=NOW.replace(tzinfo=None))
