"""Compact upstream records (one slotted dataclass per vendor object) and the ``Company`` that holds them.

Timestamps are epoch milliseconds (QuickBooks and Procore records always fall on whole seconds); money is
integer cents; ids are the vendor's own (strings for HubSpot and QuickBooks, ints for Procore).
"""

from __future__ import annotations

import bisect
import random
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from .common import from_ms, now_ms, to_ms

REALM_ID = "9130350000000001"
PROCORE_COMPANY_ID = 4242
PROCORE_COMPANY_NAME = "Fulcrum Demo Construction"


class Record(Protocol):
    @property
    def id(self) -> str | int: ...
    @property
    def created(self) -> int: ...
    @property
    def updated(self) -> int: ...


class ProjectRecord(Record, Protocol):
    @property
    def project_id(self) -> int: ...


@dataclass(slots=True)
class HsOwner:
    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    created: int
    updated: int


@dataclass(slots=True)
class HsCompany:
    id: str
    name: str
    domain: str
    owner_id: str
    renewal: str | None  # "YYYY-MM-DD"; None = never set, "" = cleared
    city: str
    state: str
    phone: str
    employees: int
    created: int
    updated: int


@dataclass(slots=True)
class QboCustomer:
    """A QuickBooks Customer; a job (project) is a Customer with ``is_job`` and a parent."""

    id: str
    display_name: str
    company_name: str | None
    email: str | None
    web: str | None
    is_job: bool
    parent_id: str | None
    fully_qualified_name: str
    active: bool
    balance: int
    notes: str
    created: int
    updated: int
    sync_token: int = 0


@dataclass(slots=True)
class QboVendor:
    id: str
    display_name: str
    email: str
    phone: str
    active: bool
    created: int
    updated: int
    sync_token: int = 0


class QboLine(NamedTuple):
    amount: int
    job_id: str | None  # None = overhead, not charged to a job
    billable: str  # Billable | NotBillable | HasBeenBilled
    description: str


@dataclass(slots=True)
class QboTxn:
    """Invoice, Bill, Purchase or Estimate (``kind``)."""

    kind: str
    id: str
    doc_number: str
    customer_id: str | None  # Invoice / Estimate: the job
    vendor_id: str | None  # Bill / Purchase
    txn_date: date
    due_date: date | None
    total: int
    balance: int
    lines: tuple[QboLine, ...]
    status: str  # Estimate TxnStatus, Purchase PaymentType, else ""
    memo: str
    created: int
    updated: int
    sync_token: int = 0


@dataclass(slots=True)
class PcProject:
    id: int
    name: str
    project_number: str
    origin_id: str
    total_value: int
    schedule_status: str
    active: bool
    start_date: date
    completion_date: date
    city: str
    state: str
    created: int
    updated: int


@dataclass(slots=True)
class PcTask:
    id: int
    project_id: int
    name: str
    start: date
    finish: date
    actual_finish: date | None
    percentage: int
    milestone: bool
    created: int
    updated: int


@dataclass(slots=True)
class PcChangeOrder:
    id: int
    project_id: int
    number: str
    title: str
    status: str
    grand_total: int
    created: int
    updated: int


@dataclass(slots=True)
class PcSubmittal:
    id: int
    project_id: int
    number: str
    title: str
    revision: int
    status: str
    due_date: date
    returned_date: date | None
    schedule_critical: bool
    vendor_id: int
    created: int
    updated: int


@dataclass(slots=True)
class PcVendor:
    id: int
    name: str
    abbreviated_name: str
    email: str
    trade: str
    is_active: bool
    created: int
    updated: int


R = TypeVar("R", bound=Record)
P = TypeVar("P", bound=ProjectRecord)


def record_key(record: Record) -> tuple[int, int]:
    return (record.updated, int(record.id))


@dataclass(frozen=True)
class View(Generic[R]):
    """Records sorted by (updated, numeric id) with a parallel list of ``updated`` for range bisection."""

    records: list[R]
    keys: list[int]

    @classmethod
    def of(cls, records: list[R]) -> View[R]:
        return cls(records, [r.updated for r in records])

    def between(
        self, lo: int | None, hi: int | None, lo_open: bool = False, hi_open: bool = False
    ) -> list[R]:
        """Records with lo <= updated <= hi (``*_open`` makes that end exclusive); None = unbounded."""
        start = 0 if lo is None else (bisect.bisect_right if lo_open else bisect.bisect_left)(self.keys, lo)
        end = (
            len(self.keys)
            if hi is None
            else (bisect.bisect_left if hi_open else bisect.bisect_right)(self.keys, hi)
        )
        return self.records if start == 0 and end == len(self.keys) else self.records[start:end]

    def moved(self, changes: list[tuple[R, tuple[int, int]]]) -> View[R]:
        """This view once ``changes`` (each a record and its key before) had ``updated`` changed in place.

        The order a fresh sort gives, in time linear in the view with no per-record Python work: after a
        1% mutation re-sorting every table (0.5 s at scale 17) made the first pages of an incremental
        sync wait on work proportional to the whole data set."""
        records, keys = self.records, self.keys
        gone = set()
        for record, (old_updated, old_id) in changes:
            lo = bisect.bisect_left(keys, old_updated)
            hi = bisect.bisect_right(keys, old_updated, lo)
            # Within one ``updated`` the order is by numeric id, and ids never change.
            at = bisect.bisect_left(records, old_id, lo, hi, key=lambda r: int(r.id))
            if at >= hi or records[at] is not record:
                return View.of(sorted(records, key=record_key))  # not where this view had it: start over
            gone.add(at)
        kept: list[R] = []
        kept_keys: list[int] = []
        start = 0
        for at in sorted(gone):
            kept += records[start:at]
            kept_keys += keys[start:at]
            start = at + 1
        kept += records[start:]
        kept_keys += keys[start:]
        by_updated: dict[int, list[R]] = {}
        for record, _old in changes:
            by_updated.setdefault(record.updated, []).append(record)
        for updated, block in by_updated.items():
            lo = bisect.bisect_left(kept_keys, updated)
            hi = bisect.bisect_right(kept_keys, updated, lo)
            merged = sorted([*kept[lo:hi], *block], key=record_key)
            kept[lo:hi] = merged
            kept_keys[lo:hi] = [updated] * len(merged)
        return View(kept, kept_keys)


TABLE_ALIASES = {"milestone": "task", "schedule_task": "task", "change_order_package": "change_order"}


@dataclass(eq=False, repr=False)
class Company:
    """The generated upstream world.  Mutations take ``lock``; readers use the cached sorted views."""

    seed: int
    scale: float
    today: date
    now: datetime
    name_variants: bool = False  # accounting spells some clients differently from the CRM (no shared domain)
    owners: dict[str, HsOwner] = field(default_factory=dict)
    hs_companies: dict[str, HsCompany] = field(default_factory=dict)
    qbo_customers: dict[str, QboCustomer] = field(default_factory=dict)
    qbo_vendors: dict[str, QboVendor] = field(default_factory=dict)
    qbo_invoices: dict[str, QboTxn] = field(default_factory=dict)
    qbo_bills: dict[str, QboTxn] = field(default_factory=dict)
    qbo_purchases: dict[str, QboTxn] = field(default_factory=dict)
    qbo_estimates: dict[str, QboTxn] = field(default_factory=dict)
    pc_projects: dict[int, PcProject] = field(default_factory=dict)
    pc_tasks: dict[int, PcTask] = field(default_factory=dict)
    pc_change_orders: dict[int, PcChangeOrder] = field(default_factory=dict)
    pc_submittals: dict[int, PcSubmittal] = field(default_factory=dict)
    pc_vendors: dict[int, PcVendor] = field(default_factory=dict)
    planted: dict[str, Any] = field(default_factory=dict)
    # QuickBooks keeps deletions for change data capture: entity name -> id -> when deleted (epoch ms).
    qbo_deleted: dict[str, dict[str, int]] = field(default_factory=dict)
    protected: set[tuple[str, str, str | int]] = field(default_factory=set)  # planted: keep rule facts
    healthy_projects: set[int] = field(default_factory=set)  # may carry change orders >= 50,000
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _views: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)
    _clock: int = 0

    @property
    def tables(self) -> dict[tuple[str, str], dict[Any, Any]]:
        return {
            ("hubspot", "company"): self.hs_companies,
            ("hubspot", "owner"): self.owners,
            ("quickbooks", "customer"): self.qbo_customers,
            ("quickbooks", "vendor"): self.qbo_vendors,
            ("quickbooks", "invoice"): self.qbo_invoices,
            ("quickbooks", "bill"): self.qbo_bills,
            ("quickbooks", "purchase"): self.qbo_purchases,
            ("quickbooks", "estimate"): self.qbo_estimates,
            ("procore", "project"): self.pc_projects,
            ("procore", "task"): self.pc_tasks,
            ("procore", "change_order"): self.pc_change_orders,
            ("procore", "submittal"): self.pc_submittals,
            ("procore", "vendor"): self.pc_vendors,
        }

    def table(self, system: str, object_type: str) -> dict[Any, Any]:
        kind = object_type.lower()
        key = (system.lower(), TABLE_ALIASES.get(kind, kind))
        if key not in self.tables:
            raise KeyError(f"unknown object type {system}/{object_type}")
        return self.tables[key]

    # ---- sorted views (rebuilt lazily after a change, never per request) ----------------------------

    def view(self, table: dict[Any, R]) -> View[R]:
        with self.lock:
            cached = self._views.get(id(table))
            if cached is None:
                cached = View.of(sorted(table.values(), key=record_key))
                self._views[id(table)] = cached
            result: View[R] = cached
            return result

    def by_project(self, table: dict[int, P]) -> dict[int, View[P]]:
        with self.lock:
            key = -id(table)
            cached = self._views.get(key)
            if cached is None:
                groups: dict[int, list[P]] = {}
                for record in self.view(table).records:
                    groups.setdefault(record.project_id, []).append(record)
                cached = {pid: View.of(rows) for pid, rows in groups.items()}
                self._views[key] = cached
            result: dict[int, View[P]] = cached
            return result

    def changed(self) -> None:
        self._views.clear()

    def _reorder(self, moved: dict[int, list[tuple[Any, tuple[int, int]]]]) -> None:
        """Bring the cached views up to date after records changed ``updated`` in place (``moved``: by
        ``id(table)``, each record with its key before): what ``changed`` would rebuild, without a sort."""
        tables = {id(table): table for table in self.tables.values()}
        for table_id, changes in moved.items():
            view = self._views.get(table_id)
            if view is not None:
                self._views[table_id] = view.moved(changes)
            if self._views.pop(-table_id, None) is not None and table_id in tables:
                # Per-project views regrouped here, in the write, as an upstream keeps its indexes on write:
                # left to the next read, every reader of the resource waited under the lock for the regroup
                # (0.1-0.4 s per per-project list at scale 17, inside a timed incremental sync).
                self.by_project(tables[table_id])

    # ---- writes ------------------------------------------------------------------------------------

    def write_time(self, now: datetime | None = None) -> int:
        """The timestamp for a change now: later than every existing record, on a whole second."""
        with self.lock:
            stamp = to_ms(now) if now is not None else max(now_ms(), self._clock + 1000)
            stamp -= stamp % 1000
            self._clock = max(self._clock, stamp)
            return stamp

    def delete(self, system: str, object_type: str, record_id: str | int) -> None:
        """Hard delete upstream: the record disappears from lists and single reads answer not-found."""
        with self.lock:
            table = self.table(system, object_type)
            key = int(record_id) if system.lower() == "procore" else str(record_id)
            if key not in table:
                raise KeyError(f"{system}/{object_type} {record_id} does not exist")
            del table[key]
            if system.lower() == "quickbooks":
                entity = {"customer": "Customer", "vendor": "Vendor"}.get(object_type.lower())
                entity = entity or object_type.lower().capitalize()
                self.qbo_deleted.setdefault(entity, {})[str(key)] = self.write_time()
            self.changed()

    def mutate(
        self, fraction: float = 0.01, seed: int = 1, now: datetime | None = None
    ) -> list[tuple[str, str, str | int]]:
        """Change values of ``fraction`` of all records (deterministic for a seed) and bump their
        last-modified time to one shared "now".  Planted rule facts (amounts, margins, milestone dates,
        renewal dates of planted clients) are never changed, so the planted scenario still holds."""
        from .mutations import apply_mutation  # local: keeps the record module free of behaviour

        with self.lock:
            everything = [
                (s, t, rid) for (s, t), table in self.tables.items() if t != "owner" for rid in table
            ]
            rng = random.Random(seed)
            count = min(len(everything), max(1, round(len(everything) * fraction)))
            touched = sorted(rng.sample(everything, count), key=lambda k: (k[0], k[1], str(k[2])))
            stamp = self.write_time(now)
            tables = self.tables
            moved: dict[int, list[tuple[Any, tuple[int, int]]]] = {}
            for system, object_type, rid in touched:
                table = tables[(system, object_type)]
                record = table[rid]
                moved.setdefault(id(table), []).append((record, record_key(record)))
                apply_mutation(self, system, object_type, record, rng)
                record.updated = stamp
                if hasattr(record, "sync_token"):
                    record.sync_token += 1
            self._reorder(moved)
            return touched

    def reset(self) -> None:
        """Regenerate from the original parameters, in place (references to this object stay valid)."""
        from .generator import generate_company

        fresh = generate_company(
            self.seed, self.scale, self.today, self.now, name_variants=self.name_variants
        )
        with self.lock:
            for name in self.__dataclass_fields__:
                if name != "lock":
                    setattr(self, name, getattr(fresh, name))
            self._views = {}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}.{t}={len(table)}" for (s, t), table in self.tables.items())
        return f"Company(seed={self.seed}, scale={self.scale}, today={self.today}, {sizes})"

    # ---- conveniences ------------------------------------------------------------------------------

    def days(self, offset: int) -> date:
        return self.today + timedelta(days=offset)

    def latest_change(self) -> datetime:
        return from_ms(self._clock)
