"""Which subjects a change marks (triggers.affected_subjects), path by path, against the ORM's reading of the
same relations: the ids go to PostgreSQL as one array per step (a full sync hands over every id it stored)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.entities.models import ChangeOrder, FinancialLine, Project, Submittal
from apps.rules.engine import customfacts as cf
from apps.rules.evaluation.custom import custom_fact_save
from apps.rules.evaluation.triggers import affected_subjects
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
    SubmittalFactory,
    VendorFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> dict[str, Any]:
    """Two clients: A with projects P1 and P2, B with P3; entities hang off P1 and P3; one line has no job."""
    a, b = ClientFactory(), ClientFactory()
    p1, p2, p3 = ProjectFactory(client=a), ProjectFactory(client=a), ProjectFactory(client=b)
    vendor = VendorFactory()
    return {
        "a": a,
        "b": b,
        "p1": p1,
        "p2": p2,
        "p3": p3,
        "line": FinancialLineFactory(project=p1),
        "orphan_line": FinancialLineFactory(project=None),
        "milestone": MilestoneFactory(project=p3),
        "co1": ChangeOrderFactory(project=p1),
        "co2": ChangeOrderFactory(project=p2),
        "co3": ChangeOrderFactory(project=p3),
        "sub1": SubmittalFactory(project=p1, vendor=vendor),
        "sub3": SubmittalFactory(project=p3),
        "vendor": vendor,
    }


def _orm(projects: set[int]) -> tuple[set[int], set[int]]:
    """The change orders and submittals of these projects, read through the ORM."""
    return (
        set(ChangeOrder.objects.filter(project_id__in=projects).values_list("id", flat=True)),
        set(Submittal.objects.filter(project_id__in=projects).values_list("id", flat=True)),
    )


def test_a_money_line_marks_its_project_its_clients_projects_and_subjects(world: dict[str, Any]) -> None:
    affected = affected_subjects({"financial_line": {world["line"].pk, world["orphan_line"].pk}})

    projects = {world["p1"].pk, world["p2"].pk}  # P2 through client A
    assert affected["project"] == projects
    assert affected["client"] == {world["a"].pk}
    change_orders, submittals = _orm(projects)
    assert affected["change_order"] == change_orders == {world["co1"].pk, world["co2"].pk}
    assert affected["submittal"] == submittals == {world["sub1"].pk}


def test_a_cost_line_marks_its_project_and_its_subjects_but_not_its_client(world: dict[str, Any]) -> None:
    # Bills, purchases and estimates feed project facts only (cost_to_date, margin_pct): no client fact
    # reads them (client.ar_overdue_amount reads invoices), so client A and its other project P2 keep theirs.
    bill = FinancialLineFactory(project=world["p1"], kind=FinancialLine.Kind.BILL)
    purchase = FinancialLineFactory(project=world["p1"], kind=FinancialLine.Kind.PURCHASE)

    affected = affected_subjects({"financial_line": {bill.pk, purchase.pk}})

    assert affected["project"] == {world["p1"].pk}
    assert affected["client"] == set()
    assert (affected["change_order"], affected["submittal"]) == _orm({world["p1"].pk})


def test_a_cost_line_leaves_a_client_marked_for_another_change_of_the_same_project(
    world: dict[str, Any],
) -> None:
    bill = FinancialLineFactory(project=world["p1"], kind=FinancialLine.Kind.BILL)
    milestone = MilestoneFactory(project=world["p1"])

    affected = affected_subjects({"financial_line": {bill.pk}, "milestone": {milestone.pk}})

    assert affected["client"] == {world["a"].pk}
    assert affected["project"] == {world["p1"].pk, world["p2"].pk}


@pytest.fixture
def _custom_catalogue() -> Iterator[None]:
    yield
    cf.install({})  # saving a custom fact installs it in this process's catalogue


@pytest.mark.usefixtures("_custom_catalogue")
def test_a_cost_line_marks_its_client_when_a_client_custom_fact_reads_money(
    world: dict[str, Any], ops_manager: Any
) -> None:
    spec = {
        "key": "client_bills", "subject": "client", "type": "money", "unit": "USD",
        "description": "bills of the client's jobs", "kind": "aggregate", "related": "financial_lines",
        "function": "sum", "field": "amount", "filters": [{"field": "kind", "op": "eq", "value": "bill"}],
        "window": "",
    }  # fmt: skip
    custom_fact_save(spec=spec, actor=ops_manager)
    bill = FinancialLineFactory(project=world["p1"], kind=FinancialLine.Kind.BILL)

    affected = affected_subjects({"financial_line": {bill.pk}})

    assert affected["client"] == {world["a"].pk}
    assert affected["project"] == {world["p1"].pk, world["p2"].pk}


def test_a_milestone_and_a_change_order_mark_their_projects(world: dict[str, Any]) -> None:
    affected = affected_subjects({"milestone": {world["milestone"].pk}, "change_order": {world["co1"].pk}})

    assert affected["project"] == set(Project.objects.values_list("id", flat=True))
    assert affected["client"] == {world["a"].pk, world["b"].pk}
    assert affected["change_order"] == {world["co1"].pk, world["co2"].pk, world["co3"].pk}


def test_a_vendor_marks_its_submittals_only(world: dict[str, Any]) -> None:
    affected = affected_subjects({"vendor": {world["vendor"].pk}})

    assert affected["submittal"] == {world["sub1"].pk}
    assert affected["change_order"] == affected["project"] == affected["client"] == set()


def test_a_change_order_without_a_project_is_marked_alone(world: dict[str, Any]) -> None:
    loose = ChangeOrderFactory(project=None, project_ref="gone")

    affected = affected_subjects({"change_order": {loose.pk}})

    assert affected == {
        "change_order": {loose.pk},
        "project": set(),
        "client": set(),
        "submittal": set(),
        "document": set(),
    }


def test_nothing_changed_marks_nothing(world: dict[str, Any]) -> None:
    assert not any(affected_subjects({}).values())
