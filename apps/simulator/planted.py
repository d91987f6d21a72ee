"""The planted scenario for rule ``co-exec-review`` and an independent oracle.

    change_order.amount >= 50000 AND project.margin_pct < 12
    AND (client.missed_last_milestone is true OR client.days_to_renewal <= 60)

``PLANTED`` fixes clients, projects, milestones (days relative to "today"), income/cost and change orders.
The generator writes them into the three systems; background data never satisfies the whole rule.
``expected_matches`` recomputes the facts from the vendor-shaped records alone (it never reads ``PLANTED``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from . import hubspot, procore, quickbooks
from .records import Company

RULE_KEY = "co-exec-review"
AMOUNT = "change_order.amount >= 50000"
MARGIN = "project.margin_pct < 12"
CLIENT = "client.missed_last_milestone is true OR client.days_to_renewal <= 60"

Milestones = tuple[tuple[int, int | None], ...]  # (due, actual finish) in days from today


@dataclass(frozen=True)
class PlantedCO:
    amount: str
    outcome: str  # match | near_miss | insufficient
    reason: str
    failing: str | None = None
    status: str = "pending"


@dataclass(frozen=True)
class PlantedProject:
    name: str
    contract: str
    income: str
    cost: str
    milestones: Milestones
    cos: tuple[PlantedCO, ...]
    overhead_in_bill: str = "0"  # an overhead line (no job) inside one of the project's bills


@dataclass(frozen=True)
class PlantedClient:
    name: str
    domain: str
    story: str
    renewal: int | None
    projects: tuple[PlantedProject, ...]
    owner: str | None = None  # owner email; None = assigned round-robin
    renewal_blank: bool = False  # HubSpot property cleared ("") rather than never set (null)


def _co(
    amount: str, outcome: str, reason: str, failing: str | None = None, status: str = "pending"
) -> PlantedCO:
    return PlantedCO(amount, outcome, reason, failing, status)


# fmt: off
PLANTED: tuple[PlantedClient, ...] = (
    PlantedClient(
        "Harborview Medical Partners", "harborviewmedical.com",
        "Hospital group: the cardiac wing finished its latest milestone 9 days late; both projects run thin.",
        210, owner="maria.chen@fulcrum-demo.test", projects=(
            PlantedProject("Harborview Cardiac Wing Expansion", "6800000.00", "2400000.00", "2196000.00",
                           ((-200, -205), (-120, -118), (-40, -31), (30, None), (120, None)), (
                _co("72500.00", "match", "missed last milestone (due 40 days ago, 9 days late); margin 8.5%"),
                _co("50000.00", "match", "boundary: amount exactly 50,000.00; missed last milestone; 8.5%",
                    status="pricing"),
                _co("49999.99", "near_miss", "amount one cent below 50,000", AMOUNT, status="draft"))),
            PlantedProject("Harborview Parking Structure", "3900000.00", "1150000.00", "1032700.00",
                           ((-300, -301), (-150, -150), (-75, -77), (45, None), (200, None)), (
                _co("118400.00", "match", "client missed its last milestone (cardiac wing); margin 10.2%"),)),
        )),
    PlantedClient(
        "Northgate Logistics Group", "northgatelogistics.com",
        "Warehouse operator whose master agreement renews in exactly 60 days; cold storage margin is 11.9%.",
        60, owner="james.okafor@fulcrum-demo.test", projects=(
            PlantedProject("Northgate Cold Storage Facility", "7500000.00", "3000000.00", "2643000.00",
                           ((-150, -152), (-20, -20), (40, None), (100, None), (200, None)), (
                _co("64250.00", "match", "boundary: renewal in exactly 60 days; margin 11.9%"),)),
        )),
    PlantedClient(
        "Cobalt Ridge School District", "cobaltridgeschools.org",
        "Public school district renewing next month and behind on the new gymnasium.",
        30, projects=(
            PlantedProject("Cobalt Ridge High School Gymnasium", "4100000.00", "1800000.00", "1710000.00",
                           ((-180, -180), (-25, None), (60, None), (150, None), (240, None)), (
                _co("88000.00", "match", "both: missed last milestone and renewal in 30 days; margin 5.0%"),
                _co("143750.25", "match", "both: missed last milestone and renewal in 30 days; margin 5.0%",
                    status="approved"),
                _co("49950.00", "near_miss", "amount 49,950.00 just under 50,000", AMOUNT))),
        )),
    PlantedClient(
        "Summit Peak Hospitality", "summitpeakhotels.com",
        "Hotel group renewing in 45 days with two thin-margin resort projects (3.2% and 11.99%).",
        45, projects=(
            PlantedProject("Summit Peak Lodge Renovation", "2600000.00", "900000.00", "871200.00",
                           ((-100, -101), (-10, -12), (20, None), (80, None), (160, None)), (
                _co("55000.00", "match", "renewal in 45 days; margin 3.2%"),)),
            PlantedProject("Summit Peak Conference Center", "3200000.00", "1000000.00", "880100.00",
                           ((-200, -200), (-50, -55), (30, None), (90, None), (180, None)), (
                _co("97300.00", "match", "renewal in 45 days; margin 11.99% just under 12"),)),
        )),
    PlantedClient(
        "Meridian Bay Biotech", "meridianbaybio.com",
        "Lab developer with no renewal date on file; cost overruns put the lab fit-out under water.",
        None, renewal_blank=True, projects=(
            PlantedProject("Meridian Bay Lab Fit-Out", "3000000.00", "1250000.00", "1300000.00",
                           ((-90, -92), (-15, -3), (45, None), (120, None), (210, None)), (
                _co("250000.00", "match", "missed last milestone (12 days late); no renewal date; -4.0%"),
                _co("61000.00", "match", "missed last milestone; no renewal date; -4.0%", status="draft"))),
        )),
    PlantedClient(
        "Ironwood Civic Center Authority", "ironwoodcivic.org",
        "Municipal authority: the civic center's latest milestone is open three weeks past due.",
        400, projects=(
            PlantedProject("Ironwood Civic Center", "9800000.00", "4200000.00", "3822000.00",
                           ((-250, -251), (-120, -118), (-21, None), (60, None), (150, None)), (
                _co("51200.00", "match", "last milestone 21 days overdue and open; margin 9.0%"),
                _co("77777.77", "match", "last milestone 21 days overdue and open; margin 9.0%"))),
            PlantedProject("Ironwood Transit Plaza", "5200000.00", "2000000.00", "1759800.00",
                           ((-200, -200), (-60, -60), (30, None), (120, None), (300, None)), (
                _co("90000.00", "near_miss", "margin 12.01% just above 12", MARGIN),)),
        )),
    PlantedClient(
        "Lakeshore Transit Authority", "lakeshoretransit.org",
        "Transit agency that missed its last milestone, but the station project earns exactly 12.0%.",
        300, projects=(
            PlantedProject("Lakeshore Light Rail Station", "8000000.00", "2500000.00", "2200000.00",
                           ((-100, -100), (-30, -25), (50, None), (150, None), (250, None)), (
                _co("95000.00", "near_miss", "margin exactly 12.0 (not < 12)", MARGIN),
                _co("50000.00", "near_miss", "amount exactly 50,000.00 but margin exactly 12.0", MARGIN))),
        )),
    PlantedClient(
        "Pinecrest Senior Living", "pinecrestseniorliving.com",
        "Senior-care operator renewing in 20 days; the memory-care wing makes 12.3%.",
        20, projects=(
            PlantedProject("Pinecrest Memory Care Wing", "2900000.00", "1000000.00", "877000.00",
                           ((-120, -121), (-35, -36), (25, None), (100, None), (200, None)), (
                _co("130000.00", "near_miss", "margin 12.3% just above 12", MARGIN),)),
        )),
    PlantedClient(
        "Granite Falls Water District", "granitefallswater.org",
        "Water district renewing in 61 days with every milestone met; a non-milestone task is overdue.",
        61, projects=(
            PlantedProject("Granite Falls Treatment Plant Upgrade", "12500000.00", "5000000.00", "4650000.00",
                           ((-200, -201), (-45, -45), (15, None), (90, None), (365, None)), (
                _co("82000.00", "near_miss", "renewal in 61 days (not <= 60); last milestone met", CLIENT),
                _co("50000.00", "near_miss", "amount exactly 50,000.00 but renewal in 61 days", CLIENT))),
        )),
    PlantedClient(
        "Redwood Valley Foods", "redwoodvalleyfoods.com",
        "Food producer whose latest milestone was completed exactly on its due date.",
        300, projects=(
            PlantedProject("Redwood Valley Bottling Line", "4400000.00", "1600000.00", "1504000.00",
                           ((-150, -152), (-12, -12), (40, None), (120, None), (210, None)), (
                _co("66000.00", "near_miss", "last milestone completed exactly on its due date", CLIENT),)),
        )),
    PlantedClient(
        "Silverline Data Centers", "silverlinedc.com",
        "Data-center developer with two old missed milestones, but its most recent milestone was met.",
        250, projects=(
            PlantedProject("Silverline Data Hall 3", "11000000.00", "3500000.00", "3360000.00",
                           ((-180, None), (-95, -80), (30, None), (100, None), (200, None)), (
                _co("150000.00", "near_miss", "missed milestones are older; the most recent one was met",
                    CLIENT),)),
            PlantedProject("Silverline Substation Tie-In", "1900000.00", "800000.00", "640000.00",
                           ((-8, -9), (50, None), (100, None), (200, None), (300, None)), ()),
        )),
    PlantedClient(
        "Bluewater Marina Holdings", "bluewatermarina.com",
        "Marina owner: the open milestone is due today (not yet past due); the previous one was met.",
        180, projects=(
            PlantedProject("Bluewater Marina Boathouse", "1800000.00", "700000.00", "644000.00",
                           ((-60, -61), (-14, -14), (0, None), (30, None), (90, None)), (
                _co("70000.00", "near_miss", "latest past-due milestone met; open one due today", CLIENT),)),
        )),
    PlantedClient(
        "Westbrook Library Foundation", "westbrooklibrary.org",
        "Library foundation: job margin 12.5%, but one bill also carries an 80,000 overhead line (no job).",
        500, projects=(
            PlantedProject("Westbrook Library Annex", "2700000.00", "1000000.00", "875000.00",
                           ((-70, -70), (-18, -10), (40, None), (100, None), (180, None)), (
                _co("110000.00", "near_miss", "margin 12.5% (an overhead line without a job must not count)",
                    MARGIN),), overhead_in_bill="80000.00"),
        )),
    PlantedClient(
        "Foxglove Botanical Gardens", "foxglovegardens.org",
        "Botanical garden: the conservatory has costs but no invoices yet, so its margin is unknown.",
        100, projects=(
            PlantedProject("Foxglove Glass Conservatory", "2200000.00", "0", "300000.00",
                           ((-90, -90), (-40, None), (20, None), (80, None), (160, None)), (
                _co("120000.00", "insufficient", "no invoices: project.margin_pct is null"),)),
        )),
    PlantedClient(
        "Aurora Ridge Observatory", "auroraridgeobservatory.org",
        "New observatory client: no renewal date and no milestone past due yet.",
        None, projects=(
            PlantedProject("Aurora Ridge Telescope Enclosure", "1500000.00", "400000.00", "380000.00",
                           ((5, None), (60, None), (120, None), (200, None), (300, None)), (
                _co("60000.00", "insufficient",
                    "client.missed_last_milestone and client.days_to_renewal are both null"),)),
        )),
)
# fmt: on


def cents(amount: str) -> int:
    return int(Decimal(amount) * 100)


# ---- the independent oracle ------------------------------------------------------------------------------


def vendor_records(company: Company) -> dict[str, list[dict[str, Any]]]:
    """Every record the oracle needs, in the exact vendor JSON shapes (as served over HTTP); Procore's
    project-scoped records (tasks, change order packages) under ``project_id``: the project they are
    listed under (their own JSON has none)."""
    with company.lock:
        return {
            "hubspot_companies": [
                hubspot.render_company(c, list(hubspot.ALL_PROPERTIES)) for c in company.hs_companies.values()
            ],
            "qbo_customers": [quickbooks.render(c) for c in company.qbo_customers.values()],
            "qbo_invoices": [quickbooks.render(t) for t in company.qbo_invoices.values()],
            "qbo_bills": [quickbooks.render(t) for t in company.qbo_bills.values()],
            "qbo_purchases": [quickbooks.render(t) for t in company.qbo_purchases.values()],
            "pc_projects": [procore.render_project(p) for p in company.pc_projects.values()],
            "pc_tasks": [
                {**procore.render_task(t), "project_id": t.project_id} for t in company.pc_tasks.values()
            ],
            "pc_change_orders": [
                {**procore.render_change_order(c), "project_id": c.project_id}
                for c in company.pc_change_orders.values()
            ],
        }


def _dec(value: Any) -> Decimal:
    """A JSON number or decimal string as an exact Decimal (floats via their shortest repr)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


@dataclass
class Facts:
    amount: Decimal
    margin_pct: Decimal | None
    missed_last_milestone: bool | None
    days_to_renewal: int | None

    def conditions(self) -> tuple[bool | None, bool | None, bool | None]:
        """Three-valued truth of AMOUNT, MARGIN and CLIENT (None = insufficient data)."""
        amount = self.amount >= 50000
        margin = None if self.margin_pct is None else self.margin_pct < 12
        missed = self.missed_last_milestone
        renewal = None if self.days_to_renewal is None else self.days_to_renewal <= 60
        client = (
            True if (missed is True or renewal is True) else (None if None in (missed, renewal) else False)
        )
        return amount, margin, client

    def outcome(self) -> bool | None:
        parts = self.conditions()
        if False in parts:
            return False
        return None if None in parts else True


def _domain_of_customer(customer: Mapping[str, Any]) -> str | None:
    uri = (customer.get("WebAddr") or {}).get("URI")
    if uri:
        host = str(uri).split("://", 1)[-1].split("/", 1)[0].lower()
        return host.removeprefix("www.")
    email = (customer.get("PrimaryEmailAddr") or {}).get("Address")
    return str(email).rsplit("@", 1)[1].lower() if email and "@" in str(email) else None


def _job_costs(documents: Iterable[Mapping[str, Any]], totals: dict[str, Decimal]) -> None:
    for doc in documents:
        for line in doc.get("Line", []):
            detail = line.get(line.get("DetailType", ""), {}) or {}
            job = (detail.get("CustomerRef") or {}).get("value")
            if job is not None:
                totals[job] += _dec(line["Amount"])


def compute_facts(records: Mapping[str, list[dict[str, Any]]], today: date) -> dict[int, Facts]:
    """Facts of every Procore change order, computed from vendor-shaped records only."""
    renewals: dict[str, str | None] = {}
    for company in records["hubspot_companies"]:
        props = company["properties"]
        renewals[str(props.get("domain") or "").lower()] = props.get("contract_renewal_date") or None
    customers = {c["Id"]: c for c in records["qbo_customers"]}
    income: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in records["qbo_invoices"]:
        income[invoice["CustomerRef"]["value"]] += _dec(invoice["TotalAmt"])
    cost: dict[str, Decimal] = defaultdict(Decimal)
    _job_costs(records["qbo_bills"], cost)
    _job_costs(records["qbo_purchases"], cost)

    project_client: dict[int, str | None] = {}
    project_job: dict[int, str] = {}
    for project in records["pc_projects"]:
        job = customers.get(str(project.get("origin_id")))
        parent = customers.get((job.get("ParentRef") or {}).get("value")) if job else None
        project_client[project["id"]] = _domain_of_customer(parent) if parent else None
        if job:
            project_job[project["id"]] = job["Id"]

    milestones: dict[str, list[tuple[date, date | None]]] = defaultdict(list)
    for task in records["pc_tasks"]:
        client = project_client.get(task["project_id"])
        if task.get("milestone") and client:
            done = task.get("actual_finish")
            milestones[client].append(
                (
                    date.fromisoformat(task["finish_datetime"][:10]),
                    date.fromisoformat(done[:10]) if done else None,
                )
            )

    def missed_last(client: str | None) -> bool | None:
        past = [m for m in milestones.get(client or "", []) if m[0] < today]
        if not past:
            return None
        latest = max(due for due, _ in past)
        return any(done is None or done > due for due, done in past if due == latest)

    def days_to_renewal(client: str | None) -> int | None:
        value = renewals.get(client or "")
        return (date.fromisoformat(value) - today).days if value else None

    facts: dict[int, Facts] = {}
    for co in records["pc_change_orders"]:
        pid = co["project_id"]
        job_id = project_job.get(pid, "")
        inc = income.get(job_id, Decimal(0))
        margin = None if inc == 0 else (inc - cost.get(job_id, Decimal(0))) / inc * 100
        client = project_client.get(pid)
        facts[co["id"]] = Facts(_dec(co["grand_total"]), margin, missed_last(client), days_to_renewal(client))
    return facts


def evaluate(records: Mapping[str, list[dict[str, Any]]], today: date) -> tuple[set[int], set[int]]:
    """(matching change order ids, insufficient-data change order ids) for ``co-exec-review``."""
    facts = compute_facts(records, today)
    matches = {cid for cid, f in facts.items() if f.outcome() is True}
    insufficient = {cid for cid, f in facts.items() if f.outcome() is None}
    return matches, insufficient


def expected_matches(company: Company, today: date | None = None) -> set[int]:
    """Procore change order ids that match ``co-exec-review``, recomputed from the vendor records."""
    return evaluate(vendor_records(company), today or company.today)[0]
