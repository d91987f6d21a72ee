"""What the simulator holds, counted the way the connectors load it: the oracle for exact-count tests."""

from __future__ import annotations

from apps.entities.models import (
    ChangeOrder,
    Client,
    CrmOwner,
    FinancialLine,
    Milestone,
    Project,
    SourceObject,
    Submittal,
    Vendor,
)
from apps.simulator import Company


def expected_counts(company: Company) -> dict[str, int]:
    customers = company.qbo_customers.values()

    def job_lines(txns: dict[str, object]) -> int:
        return sum(1 for txn in txns.values() for line in txn.lines if line.job_id)  # type: ignore[attr-defined]

    return {
        "owners": len(company.owners),
        "clients": len(company.hs_companies),
        "customers": sum(1 for c in customers if not c.is_job),
        "jobs": sum(1 for c in customers if c.is_job),
        "invoices": len(company.qbo_invoices),
        "bills": job_lines(company.qbo_bills),
        "purchases": job_lines(company.qbo_purchases),
        "estimates": len(company.qbo_estimates),
        "projects": len(company.pc_projects),
        "vendors": len(company.pc_vendors),
        "milestones": sum(1 for t in company.pc_tasks.values() if t.milestone),
        "change_orders": len(company.pc_change_orders),
        "submittals": len(company.pc_submittals),
    }


def loaded_counts() -> dict[str, int]:
    money = FinancialLine.objects
    return {
        "owners": CrmOwner.objects.count(),
        "clients": Client.objects.count(),
        "customers": SourceObject.objects.filter(object_type="customer").count(),
        "jobs": SourceObject.objects.filter(object_type="job").count(),
        "invoices": money.filter(kind="invoice").count(),
        "bills": money.filter(kind="bill").count(),
        "purchases": money.filter(kind="purchase").count(),
        "estimates": money.filter(kind="estimate").count(),
        "projects": Project.objects.count(),
        "vendors": Vendor.objects.count(),
        "milestones": Milestone.objects.count(),
        "change_orders": ChangeOrder.objects.count(),
        "submittals": Submittal.objects.count(),
    }
