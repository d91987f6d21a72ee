"""The sorted views after a mutation: what a fresh sort gives, without re-sorting the tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from apps.simulator.records import Company, record_key

from .conftest import NOW, make_company


def _fresh(company: Company, table: dict[Any, Any]) -> list[Any]:
    return sorted(table.values(), key=record_key)


def _warm(company: Company) -> dict[tuple[str, str], Any]:
    views = {name: company.view(table) for name, table in company.tables.items()}
    company.by_project(company.pc_change_orders)
    return views


def test_views_after_mutations_are_the_fresh_sorted_order() -> None:
    company = make_company(scale=0.3)
    _warm(company)

    company.mutate(fraction=0.05, seed=1)  # stamped after every record
    company.mutate(fraction=0.05, seed=2, now=NOW - timedelta(days=40))  # in the middle of the history
    company.mutate(fraction=0.05, seed=3, now=NOW - timedelta(days=40))  # the same instant again

    for name, table in company.tables.items():
        view = company.view(table)
        assert view.records == _fresh(company, table), name
        assert view.keys == [r.updated for r in view.records], name
    for pid, view in company.by_project(company.pc_change_orders).items():
        assert view.records == [r for r in _fresh(company, company.pc_change_orders) if r.project_id == pid]


def test_a_mutation_keeps_the_views_of_tables_it_did_not_touch() -> None:
    company = make_company(scale=0.3)
    before = _warm(company)

    touched = {(system, kind) for system, kind, _id in company.mutate(fraction=0.002, seed=5)}

    untouched = [name for name in company.tables if name not in touched]
    assert untouched and touched
    for name in untouched:
        assert company.view(company.tables[name]) is before[name]  # not rebuilt
    for name in touched:
        assert company.view(company.tables[name]).records == _fresh(company, company.tables[name])


def test_a_mutation_regroups_the_per_project_views_it_moved_at_once() -> None:
    # The first per-project read after a change finds its grouping made (readers do not regroup it under
    # the lock), and it is what a fresh grouping gives.
    company = make_company(scale=0.3)
    _warm(company)
    table = company.pc_change_orders

    company.mutate(fraction=0.05, seed=4)

    grouped = company._views.get(-id(table))
    assert grouped is not None
    fresh = _fresh(company, table)
    for pid, view in grouped.items():
        assert view.records == [r for r in fresh if r.project_id == pid]
