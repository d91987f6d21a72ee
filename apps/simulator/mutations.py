"""Value changes applied by ``Company.mutate`` — realistic edits that keep the planted scenario intact."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from .names import CO_STATUS_ENUM, EXPENSE_MEMOS
from .records import (
    Company,
    HsCompany,
    PcChangeOrder,
    PcProject,
    PcSubmittal,
    PcTask,
    PcVendor,
    QboCustomer,
    QboTxn,
    QboVendor,
)

MAX_SMALL_CO = 4_999_999  # cents: change orders on unhealthy projects stay below 50,000.00


def apply_mutation(company: Company, system: str, object_type: str, record: Any, rng: random.Random) -> None:
    protected = (system, object_type, record.id) in company.protected
    if isinstance(record, HsCompany):
        _hubspot_company(company, record, rng, protected)
    elif isinstance(record, QboCustomer):
        record.notes = f"Updated contact notes #{rng.randint(100, 999)}"
    elif isinstance(record, QboVendor):
        record.phone = f"(503) 555-{rng.randint(1000, 9999)}"
    elif isinstance(record, QboTxn):
        _qbo_txn(record, rng)
    elif isinstance(record, PcProject):
        # The in-house API (generic.py) serves schedule_status; Procore has none, so a Procore-visible field
        # changes too.
        record.schedule_status = rng.choice(
            [s for s in ("on_track", "at_risk", "behind") if s != record.schedule_status]
        )
        record.completion_date += timedelta(days=rng.choice((-7, 7, 14)))
    elif isinstance(record, PcTask):
        _task(company, record, rng, protected)
    elif isinstance(record, PcChangeOrder):
        _change_order(company, record, rng, protected)
    elif isinstance(record, PcSubmittal):
        if record.returned_date is None:
            record.returned_date = company.today
            record.status = rng.choice(("Approved", "Approved as Noted", "Revise and Resubmit"))
        else:
            record.revision += 1
            record.returned_date = None
            record.status = "Open"
            record.due_date = company.today + timedelta(days=rng.randint(7, 21))
    elif isinstance(record, PcVendor):
        record.email = f"office{rng.randint(1, 99)}@{record.email.split('@', 1)[1]}"


def _hubspot_company(company: Company, record: HsCompany, rng: random.Random, protected: bool) -> None:
    roll = rng.random()
    if protected or roll < 0.3:
        record.employees = max(5, record.employees + rng.randint(-20, 40))
    elif roll < 0.7:
        record.renewal = (company.today + timedelta(days=rng.randint(-20, 540))).isoformat()
    else:
        record.owner_id = rng.choice(sorted(company.owners))


def _qbo_txn(record: QboTxn, rng: random.Random) -> None:
    if record.kind == "Estimate":
        record.status = rng.choice([s for s in ("Pending", "Accepted", "Closed") if s != record.status])
    elif record.balance > 0:  # a payment arrives
        record.balance = 0 if rng.random() < 0.6 else record.balance // 2
    else:
        record.memo = f"{rng.choice(EXPENSE_MEMOS)} — ref {rng.randint(1000, 9999)}"
        if record.due_date is not None:
            record.due_date += timedelta(days=rng.randint(1, 15))


def _task(company: Company, record: PcTask, rng: random.Random, protected: bool) -> None:
    past_due = record.finish < company.today and record.actual_finish is None
    if past_due and not protected and rng.random() < 0.5:
        record.actual_finish = company.today
        record.percentage = 100
    elif record.actual_finish is None:
        record.percentage = min(95, record.percentage + rng.randint(5, 20))
    else:
        record.name = record.name.rstrip(" *") + " *"


def _change_order(company: Company, record: PcChangeOrder, rng: random.Random, protected: bool) -> None:
    record.status = rng.choice([s for s in CO_STATUS_ENUM if s != record.status])
    if protected:
        return
    new_total = round(record.grand_total * rng.uniform(0.9, 1.1))
    if record.project_id not in company.healthy_projects:
        new_total = min(new_total, MAX_SMALL_CO)
    record.grand_total = new_total
