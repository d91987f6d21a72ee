"""Every SPEC fact's meaning, computed by the set-based SQL, on small hand-built data."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from apps.connectors.models import StreamState
from apps.rules.evaluation.facts import compute_contexts, evaluation_date
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
    SubmittalFactory,
    VendorFactory,
)

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 15, 17, 0, tzinfo=dt.UTC)  # 12:00 in America/Chicago
TODAY = dt.date(2026, 6, 15)


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def context(subject_type, subject_id):
    [ctx] = list(compute_contexts(subject_type, [subject_id], now=NOW))
    return ctx.values


def days(n):
    return TODAY - dt.timedelta(days=n)


def test_today_is_the_evaluation_date_in_time_zone():
    late_evening_utc = dt.datetime(2026, 6, 16, 3, 0, tzinfo=dt.UTC)  # still the 15th in Chicago
    assert evaluation_date(late_evening_utc) == TODAY


def test_change_order_facts():
    project = ProjectFactory(contract_value=Decimal("400000.00"))
    co = ChangeOrderFactory(
        project=project,
        amount=Decimal("60000.00"),
        status="pending",
        created_upstream_at=NOW - dt.timedelta(days=12, hours=1),
    )
    facts = context("change_order", co.pk)
    assert facts["change_order.amount"] == Decimal("60000.00")
    assert facts["change_order.amount_pct_of_contract"] == Decimal("15.0000")
    assert facts["change_order.status"] == "pending"
    assert facts["change_order.age_days"] == 12


def test_amount_pct_of_contract_is_null_without_contract_value():
    co = ChangeOrderFactory(project=ProjectFactory(contract_value=None))
    assert context("change_order", co.pk)["change_order.amount_pct_of_contract"] is None


def test_margin_income_and_cost_from_accounting_lines():
    project = ProjectFactory()
    FinancialLineFactory(project=project, kind="invoice", amount=Decimal("600000"))
    FinancialLineFactory(project=project, kind="invoice", amount=Decimal("400000"))
    FinancialLineFactory(project=project, kind="bill", amount=Decimal("700000"))
    FinancialLineFactory(project=project, kind="purchase", amount=Decimal("210000"))
    FinancialLineFactory(project=project, kind="estimate", amount=Decimal("999999"))  # not income, not cost
    FinancialLineFactory(project=project, kind="invoice", amount=Decimal("50"), deleted_at=NOW)  # tombstone
    facts = context("project", project.pk)
    assert facts["project.income_to_date"] == Decimal("1000000.00")
    assert facts["project.cost_to_date"] == Decimal("910000.00")
    assert facts["project.margin_pct"] == Decimal("9.0000")


def test_no_income_means_null_margin():
    project = ProjectFactory()
    FinancialLineFactory(project=project, kind="bill", amount=Decimal("5000"))
    facts = context("project", project.pk)
    assert facts["project.income_to_date"] is None
    assert facts["project.margin_pct"] is None
    assert facts["project.cost_to_date"] == Decimal("5000.00")


def test_change_orders_in_last_30_days():
    project = ProjectFactory()
    ChangeOrderFactory(
        project=project, amount=Decimal("100"), created_upstream_at=NOW - dt.timedelta(days=29)
    )
    ChangeOrderFactory(project=project, amount=Decimal("250"), created_upstream_at=NOW - dt.timedelta(days=1))
    ChangeOrderFactory(
        project=project, amount=Decimal("999"), created_upstream_at=NOW - dt.timedelta(days=31)
    )
    facts = context("project", project.pk)
    assert facts["project.change_orders_30d"] == 2
    assert facts["project.change_order_amount_30d"] == Decimal("350.00")


def test_milestones_missed_and_days_behind():
    project = ProjectFactory()
    MilestoneFactory(project=project, due_date=days(20), completed_date=days(20))  # on time
    MilestoneFactory(project=project, due_date=days(30), completed_date=days(25))  # late by 5 days
    MilestoneFactory(project=project, due_date=days(8), completed_date=None)  # open, 8 days late
    MilestoneFactory(project=project, due_date=TODAY, completed_date=None)  # due today: not yet missed
    MilestoneFactory(project=project, due_date=days(-5), completed_date=None)  # future
    facts = context("project", project.pk)
    assert facts["project.milestones_missed"] == 2
    assert facts["project.days_behind_schedule"] == 8


def test_no_past_due_milestones_means_zero_behind():
    project = ProjectFactory()
    MilestoneFactory(project=project, due_date=days(-3))
    facts = context("project", project.pk)
    assert facts["project.milestones_missed"] == 0
    assert facts["project.days_behind_schedule"] == 0


def test_client_missed_last_milestone_looks_at_the_most_recently_due_only():
    client = ClientFactory()
    a, b = ProjectFactory(client=client), ProjectFactory(client=client)
    MilestoneFactory(project=a, due_date=days(40), completed_date=None)  # missed, but older
    MilestoneFactory(project=b, due_date=days(3), completed_date=days(3))  # most recent: met
    assert context("client", client.pk)["client.missed_last_milestone"] is False
    MilestoneFactory(project=a, due_date=days(1), completed_date=days(0))  # newer, completed late
    assert context("client", client.pk)["client.missed_last_milestone"] is True


def test_client_without_past_milestones_has_null_missed_last_milestone():
    client = ClientFactory()
    MilestoneFactory(project=ProjectFactory(client=client), due_date=days(-10))
    assert context("client", client.pk)["client.missed_last_milestone"] is None


def test_days_to_renewal_and_null_without_contract():
    assert (
        context("client", ClientFactory(renewal_date=TODAY + dt.timedelta(days=45)).pk)[
            "client.days_to_renewal"
        ]
        == 45
    )
    assert context("client", ClientFactory(renewal_date=None).pk)["client.days_to_renewal"] is None


def test_ar_overdue_counts_open_balances_past_due():
    client = ClientFactory()
    project = ProjectFactory(client=client)
    FinancialLineFactory(project=project, kind="invoice", amount=100, balance=Decimal("80"), due_date=days(1))
    FinancialLineFactory(
        project=project, kind="invoice", amount=100, balance=Decimal("70"), due_date=days(-1)
    )
    FinancialLineFactory(project=project, kind="invoice", amount=100, balance=Decimal("0"), due_date=days(9))
    assert context("client", client.pk)["client.ar_overdue_amount"] == Decimal("80.00")


def test_change_order_sees_project_and_client_facts():
    client = ClientFactory(renewal_date=TODAY + dt.timedelta(days=10))
    co = ChangeOrderFactory(project=ProjectFactory(client=client, schedule_status="behind"))
    facts = context("change_order", co.pk)
    assert facts["client.days_to_renewal"] == 10
    assert facts["project.schedule_status"] == "behind"
    assert "submittal.revision" not in facts


def test_submittal_and_vendor_facts():
    vendor = VendorFactory()
    project = ProjectFactory()
    overdue = SubmittalFactory(
        project=project, vendor=vendor, revision=2, due_date=days(6), schedule_critical=True
    )
    SubmittalFactory(project=project, vendor=vendor, due_date=days(30), returned_date=days(30))  # on the day
    SubmittalFactory(project=project, vendor=vendor, due_date=days(20), returned_date=days(25))  # early
    SubmittalFactory(project=project, vendor=vendor, due_date=days(10), returned_date=days(2))  # 8 days late
    SubmittalFactory(project=project, vendor=vendor, due_date=days(400), returned_date=days(300))  # too old
    facts = context("submittal", overdue.pk)
    assert facts["submittal.revision"] == 2
    assert facts["submittal.days_overdue"] == 6
    assert facts["submittal.schedule_critical"] is True
    assert facts["vendor.late_submittal_rate"] == Decimal("50.0000")  # 2 of 4 (one still out) in 365 days
    assert "client.days_to_renewal" in facts


def test_bulk_and_single_paths_agree():
    for i in range(5):
        project = ProjectFactory()
        FinancialLineFactory(project=project, kind="invoice", amount=Decimal(1000 + i))
        MilestoneFactory(project=project, due_date=days(i + 1))
        ChangeOrderFactory(project=project, amount=Decimal(10_000 * i))
    bulk = {c.subject_id: c.values for c in compute_contexts("change_order", None, now=NOW)}
    assert len(bulk) == 5
    for subject_id, values in bulk.items():
        assert context("change_order", subject_id) == values


def test_every_subject_type_gets_the_same_facts_over_everything_as_one_by_one():
    """The query over every subject leaves out the aggregates' restriction to the subjects' projects and
    clients (it restricts nothing there); the facts must be those of the per-subject query, including
    for subjects next to deleted ones, projects without change orders and records of other clients."""
    from apps.quality.models import Finding
    from tests.factories import DocumentFactory

    lively, quiet = ProjectFactory(), ProjectFactory(contract_value=None)
    gone = ProjectFactory(deleted_at=NOW)
    for i, project in enumerate((lively, quiet, gone)):
        FinancialLineFactory(project=project, kind="invoice", amount=Decimal(1000 + i), balance=Decimal(5),
                             due_date=days(3))  # fmt: skip
        FinancialLineFactory(project=project, kind="bill", amount=Decimal(700 + i))
        MilestoneFactory(project=project, due_date=days(i + 2), completed_date=None if i else days(1))
        SubmittalFactory(project=project, due_date=days(4), returned_date=None)
    recent = NOW - dt.timedelta(days=2)
    ChangeOrderFactory(project=lively, amount=Decimal("60000.00"), created_upstream_at=recent)
    ChangeOrderFactory(project=lively, amount=Decimal("10.00"), deleted_at=NOW)
    co = ChangeOrderFactory(project=gone, amount=Decimal("5.00"))
    DocumentFactory(project=lively, change_order=co, amount=Decimal("7.00"), confidence=0.5)
    DocumentFactory(client=quiet.client, confidence=0.99)
    Finding.objects.create(
        key="f", kind="missing_field", check_name="f", severity="error", subject_type="change_order",
        subject_id=co.pk, first_seen=NOW, last_seen=NOW,
    )  # fmt: skip
    for subject_type in ("change_order", "project", "client", "submittal", "document"):
        every = {c.subject_id: c.values for c in compute_contexts(subject_type, None, now=NOW)}
        assert every, subject_type
        one_by_one = {c.subject_id: c.values for c in compute_contexts(subject_type, sorted(every), now=NOW)}
        assert every == one_by_one, subject_type
    assert gone.pk not in {c.subject_id for c in compute_contexts("project", None, now=NOW)}


def test_deleted_subjects_are_not_evaluated():
    co = ChangeOrderFactory(deleted_at=NOW)
    assert list(compute_contexts("change_order", [co.pk], now=NOW)) == []


def test_fact_ages_follow_the_least_fresh_input_stream():
    co = ChangeOrderFactory()
    pm = ConnectionFactory(slug="pm")
    accounting = ConnectionFactory(slug="accounting")
    StreamState.objects.create(
        connection=pm, stream="change_orders", last_success_at=NOW - dt.timedelta(minutes=5)
    )
    StreamState.objects.create(connection=pm, stream="projects", last_success_at=NOW - dt.timedelta(hours=2))
    for stream in ("invoices", "bills", "purchases"):
        StreamState.objects.create(
            connection=accounting, stream=stream, last_success_at=NOW - dt.timedelta(hours=30)
        )
    [ctx] = list(compute_contexts("change_order", [co.pk], now=timezone.now()))
    assert ctx.ages["change_order.amount"] == 300
    assert ctx.ages["change_order.amount_pct_of_contract"] == 7200
    assert ctx.ages["project.margin_pct"] == 30 * 3600
    assert ctx.ages["client.days_to_renewal"] is None  # the CRM was never synced
    assert ctx.ages["client.open_escalations"] == 0


def test_data_quality_errors_count_open_error_findings_on_the_project_and_its_records():
    from apps.quality.models import Finding

    project, other = ProjectFactory(), ProjectFactory()
    co = ChangeOrderFactory(project=project)
    milestone = MilestoneFactory(project=project)

    def finding(key, subject_type, subject_id, severity="error", resolved=False):
        Finding.objects.create(
            key=key, kind="missing_field", check_name=key, severity=severity, subject_type=subject_type,
            subject_id=subject_id, first_seen=NOW, last_seen=NOW, resolved_at=NOW if resolved else None,
        )  # fmt: skip

    assert context("project", project.pk)["project.data_quality_errors"] == 0
    finding("p", "project", project.pk)
    finding("co", "change_order", co.pk)
    finding("m", "milestone", milestone.pk)
    finding("warn", "project", project.pk, severity="warn")  # warnings do not count
    finding("old", "change_order", co.pk, resolved=True)  # nor resolved findings
    finding("elsewhere", "project", other.pk)
    assert context("project", project.pk)["project.data_quality_errors"] == 3
    assert context("change_order", co.pk)["project.data_quality_errors"] == 3  # seen from its change orders
    assert context("project", other.pk)["project.data_quality_errors"] == 1
