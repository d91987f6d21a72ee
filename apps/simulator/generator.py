"""Deterministic generation of the company (``random.Random(seed)`` only; no wall clock inside)."""

from __future__ import annotations

import gc
import itertools
import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from .names import (
    BUILDINGS,
    CLIENT_KINDS,
    CO_SCOPES,
    CO_STATUSES,
    EXPENSE_MEMOS,
    MILESTONES,
    OWNER_FIRST,
    OWNER_LAST,
    OWNERS,
    PHASES,
    PLACES,
    STATES,
    STREETS,
    SUBMITTAL_STATUSES,
    SUBMITTALS,
    TASKS,
    TRADES,
    VENDOR_WORDS,
)
from .planted import AMOUNT, CLIENT, MARGIN, PLANTED, RULE_KEY, PlantedClient, PlantedProject, cents
from .records import (
    Company,
    HsCompany,
    HsOwner,
    PcChangeOrder,
    PcProject,
    PcSubmittal,
    PcTask,
    PcVendor,
    QboCustomer,
    QboLine,
    QboTxn,
    QboVendor,
)
from .variants import variant

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
SPAN_S = 730 * 86_400  # timestamps spread over the last two years
RETURNED = {"Approved", "Approved as Noted", "Revise and Resubmit", "Closed"}
CO_WEIGHTS = (10, 15, 10, 50, 8, 7)


@dataclass
class _ClientPlan:
    name: str
    domain: str
    owner_id: str
    renewal: str | None
    planted: PlantedClient | None = None
    customer_id: str = ""


@dataclass
class _ProjectPlan:
    client: _ClientPlan
    name: str
    planted: PlantedProject | None = None
    category: str = "healthy"  # healthy | mid | low | none
    project: PcProject | None = None
    job_id: str = ""
    co_ids: list[int] = field(default_factory=list)


VARIANT_SHARE = 0.125  # of the clients not planted, when name variants are on


class _Generator:
    def __init__(
        self, seed: int, scale: float, today: date, now: datetime, name_variants: bool = False
    ) -> None:
        self.rng = random.Random(seed)
        # Its own generator: turning variants on changes no other record of the company.
        self.variant_rng = random.Random(seed * 7_919 + 17) if name_variants else None
        self.scale = scale
        self.today = today
        self.now_s = int(now.timestamp())
        self.c = Company(seed=seed, scale=scale, today=today, now=now, name_variants=name_variants)
        self.c._clock = self.now_s * 1000
        self.batches = sorted(self.now_s - 3_600 - self.rng.randint(0, SPAN_S) for _ in range(40))
        self.name_seq = 0
        self.txn_seq = 120
        self.task_seq = 31_000_000
        self.co_seq = 9_700_000
        self.sub_seq = 51_000_000

    # ---- helpers -----------------------------------------------------------------------------------

    def stamps(self, hubspot: bool = False, anchor: date | int | None = None) -> tuple[int, int]:
        """(created, updated) ms.  ``anchor`` (a business date, or an epoch second) places the creation;
        many records share exact instants (bulk imports and mass updates)."""
        r = self.rng.random
        now = self.now_s
        latest = now - 3_600
        if anchor is None:
            created = self.batches[int(r() * 40)] if r() < 0.2 else latest - int(r() * SPAN_S)
        elif isinstance(anchor, int):
            created = min(anchor, latest)
        else:
            created = (anchor.toordinal() - EPOCH_ORDINAL) * 86_400 + 16 * 3_600 + int(r() * 36_000)  # 8am PT
            if created > latest:
                created = latest - int(r() * 7 * 86_400)
        x = r()
        if x < 0.3:
            updated = created
        elif x < 0.55:
            updated = max(created, self.batches[int(r() * 40)])
        elif x < 0.56:
            updated = now - 1 - int(r() * 59)  # inside the last minute
        else:
            updated = created + int(r() * (now - 60 - created))
        if hubspot:  # millisecond precision, identical for identical seconds
            return created * 1000 + (created * 7919) % 1000, updated * 1000 + (updated * 7919) % 1000
        return created * 1000, updated * 1000

    def next_name_id(self) -> str:
        self.name_seq += 1
        return str(self.name_seq)

    def next_txn_id(self) -> str:
        self.txn_seq += 1
        return str(self.txn_seq)

    def split(self, total: int, parts: int) -> list[int]:
        """Split ``total`` cents into ``parts`` positive amounts that sum exactly to it."""
        if total <= 0 or parts <= 1:
            return [total]
        weights = [0.4 + self.rng.random() for _ in range(parts)]
        scale = total / sum(weights)
        amounts = [max(1, int(w * scale)) for w in weights[:-1]]
        amounts.append(total - sum(amounts))
        return amounts if amounts[-1] > 0 else [total]

    def day_between(self, lo: date, hi: date) -> date:
        span = (hi - lo).days
        return lo + timedelta(days=self.rng.randint(0, span)) if span > 0 else min(lo, hi)

    # ---- people and companies ----------------------------------------------------------------------

    def owners(self) -> None:
        count = max(12, round(12 * self.scale))
        pairs = list(OWNERS) + [(first, last) for last in OWNER_LAST for first in OWNER_FIRST]
        for i, (first, last) in enumerate(pairs[:count]):
            created, updated = self.stamps(hubspot=True)
            oid = str(71_000_000 + i * 7_391 + 17)
            email = f"{first}.{re.sub('[^a-z]', '', last.lower())}@fulcrum-demo.test".lower()
            self.c.owners[oid] = HsOwner(oid, email, first, last, 9_100_000 + i * 53, created, updated)

    def vendors(self) -> None:
        count = max(10, round(80 * self.scale))
        used: set[str] = set()
        for i in range(count):
            trade, suffix = TRADES[i % len(TRADES)]
            word = VENDOR_WORDS[(i // len(TRADES)) % len(VENDOR_WORDS)]
            round_no = i // (len(TRADES) * len(VENDOR_WORDS))
            name = f"{word} {suffix}" + (f" {round_no + 1}" if round_no else "")
            used.add(name)
            slug = re.sub("[^a-z0-9]", "", name.lower())
            abbrev = "".join(w[0] for w in name.split() if w[0].isalnum()).upper()
            created, updated = self.stamps()
            vid = 8_400_000 + i * 3 + 1
            active = self.rng.random() > 0.05
            self.c.pc_vendors[vid] = PcVendor(
                vid, name, abbrev, f"estimating@{slug}.com", trade, active, created, updated
            )
            qid = self.next_name_id()
            created, updated = self.stamps()
            phone = f"(503) 555-{self.rng.randint(1000, 9999)}"
            self.c.qbo_vendors[qid] = QboVendor(qid, name, f"ap@{slug}.com", phone, active, created, updated)

    def client_plans(self) -> list[_ClientPlan]:
        owner_ids = list(self.c.owners)
        owner_by_email = {o.email: o.id for o in self.c.owners.values()}
        reserved = {p.name for p in PLANTED} | {p.domain for p in PLANTED}
        extras = ("Valley", "Bay", "Heights", "Park", "Point", "Springs", "Crossing", "Ridge", "Harbor")
        plans: list[_ClientPlan] = []
        total = max(len(PLANTED) + 10, round(200 * self.scale))
        while len(plans) < total - len(PLANTED):
            place, kind = self.rng.choice(PLACES), self.rng.choice(CLIENT_KINDS)
            name = f"{place} {kind}"
            if name in reserved:
                name = f"{place} {self.rng.choice(extras)} {kind}"
            domain = re.sub("[^a-z0-9]", "", name.lower()) + ".com"
            if name in reserved or domain in reserved:
                continue
            reserved.update((name, domain))
            roll = self.rng.random()
            renewal = (
                None
                if roll < 0.07
                else ""
                if roll < 0.10
                else (self.today + timedelta(days=self.rng.randint(-30, 540))).isoformat()
            )
            plans.append(_ClientPlan(name, domain, self.rng.choice(owner_ids), renewal))
        for k, spec in enumerate(PLANTED):
            owner = owner_by_email.get(spec.owner or "", owner_ids[2 + k % 10])
            renewal = (
                ""
                if spec.renewal_blank
                else (
                    None if spec.renewal is None else (self.today + timedelta(days=spec.renewal)).isoformat()
                )
            )
            plans.insert(
                self.rng.randint(0, len(plans)), _ClientPlan(spec.name, spec.domain, owner, renewal, spec)
            )
        return plans

    def clients(self, plans: list[_ClientPlan]) -> None:
        for i, plan in enumerate(plans):
            city, state = STATES[i % len(STATES)]
            hs_id = str(5_100_000_000 + i * 1_373 + (i * 7_919) % 997)
            created, updated = self.stamps(hubspot=True)
            phone = f"(503) 555-{self.rng.randint(1000, 9999)}"
            self.c.hs_companies[hs_id] = HsCompany(
                hs_id,
                plan.name,
                plan.domain,
                plan.owner_id,
                plan.renewal,
                city,
                state,
                phone,
                self.rng.randint(20, 5_000),
                created,
                updated,
            )
            plan.customer_id = self.next_name_id()
            display = plan.name
            if plan.planted is None and self.rng.random() < 0.1:
                display += self.rng.choice((", Inc.", " LLC", " Corp."))
            created, updated = self.stamps()
            self.c.qbo_customers[plan.customer_id] = QboCustomer(
                plan.customer_id,
                display,
                plan.name,
                f"ap@{plan.domain}",
                f"https://{plan.domain}",
                False,
                None,
                display,
                True,
                0,
                "",
                created,
                updated,
            )
            if plan.planted is not None:
                self.c.protected.update(
                    {("hubspot", "company", hs_id), ("quickbooks", "customer", plan.customer_id)}
                )

    def name_variants(self, plans: list[_ClientPlan]) -> list[dict[str, str]]:
        """Some accounting customers spelled differently from their CRM company (``variants.variant``), with
        a billing address on another domain, so that no exact key links them. Planted clients keep their
        exact keys: the planted scenario never depends on resolution."""
        rng = self.variant_rng
        if rng is None:
            return []
        out = []
        hubspot_by_name = {h.name: h.id for h in self.c.hs_companies.values()}
        names = [p.name for p in plans]
        for plan in plans:
            if plan.planted is not None or rng.random() >= VARIANT_SHARE:
                continue
            name, style = variant(plan.name, rng.random() < 0.3, names)
            if not name:
                continue
            customer = self.c.qbo_customers[plan.customer_id]
            billing = re.sub("[^a-z0-9]", "", name.lower())[:20] or "billing"
            customer.display_name = customer.company_name = customer.fully_qualified_name = name
            customer.web = None
            customer.email = f"payables@{billing}-ap.net"
            out.append(
                {
                    "hubspot_id": hubspot_by_name[plan.name],
                    "hubspot_name": plan.name,
                    "quickbooks_id": customer.id,
                    "quickbooks_name": name,
                    "style": style,
                    "expected": "auto_link" if style == "upper" else "review",
                }
            )
        return out

    def project_plans(self, clients: list[_ClientPlan]) -> list[_ProjectPlan]:
        background = [c for c in clients if c.planted is None]
        planted = [(c, p) for c in clients if c.planted is not None for p in c.planted.projects]
        total = max(len(planted) + 20, round(600 * self.scale))
        plans: list[_ProjectPlan] = []
        for i in range(total - len(planted)):
            client = background[i] if i < len(background) else self.rng.choice(background)
            place = client.name.split()[0] if self.rng.random() < 0.4 else self.rng.choice(STREETS + PLACES)
            plans.append(
                _ProjectPlan(client, f"{place} {self.rng.choice(PHASES)}{self.rng.choice(BUILDINGS)}")
            )
        for client, spec in planted:
            plans.insert(self.rng.randint(0, len(plans)), _ProjectPlan(client, spec.name, spec))
        return plans

    # ---- projects and their records ----------------------------------------------------------------

    def project(self, k: int, plan: _ProjectPlan, customers: dict[str, QboCustomer]) -> PcProject:
        rng = self.rng
        if plan.planted is not None:
            dues = [d for d, _ in plan.planted.milestones]
            start = self.today + timedelta(days=min(dues) - 30)
            completion = self.today + timedelta(days=max(dues) + 10)
            contract = cents(plan.planted.contract)
        else:
            start = self.today + timedelta(days=rng.randint(-700, 60))
            completion = start + timedelta(days=rng.randint(180, 720))
            contract = round(math.exp(rng.uniform(math.log(300_000), math.log(20_000_000)))) * 100
            roll = rng.random()
            plan.category = (
                "none"
                if start > self.today - timedelta(days=20) or roll < 0.05
                else "healthy"
                if roll < 0.60
                else "mid"
                if roll < 0.70
                else "low"
            )
        number = f"P-{10_001 + k}"
        parent = customers[plan.client.customer_id]
        plan.job_id = self.next_name_id()
        job_name = f"{number} {plan.name}"
        opened = start - timedelta(days=rng.randint(10, 60))
        created, updated = self.stamps(anchor=opened)
        customers[plan.job_id] = QboCustomer(
            plan.job_id,
            job_name,
            None,
            None,
            None,
            True,
            parent.id,
            f"{parent.display_name}:{job_name}",
            True,
            0,
            "",
            created,
            updated,
        )
        pid = 2_780_001 + k * 7
        created, updated = self.stamps(anchor=opened)
        active = completion > self.today - timedelta(days=60) or rng.random() < 0.5
        city, state = STATES[k % len(STATES)]
        project = PcProject(
            pid,
            plan.name,
            number,
            plan.job_id,
            contract,
            "on_track",
            active,
            start,
            completion,
            city,
            state,
            created,
            updated,
        )
        if plan.category == "healthy":
            self.c.healthy_projects.add(pid)
        return project

    def tasks(self, plan: _ProjectPlan, project: PcProject) -> list[PcTask]:
        rng, today = self.rng, self.today
        span = (project.completion_date - project.start_date).days
        rows: list[tuple[str, date, date | None, bool]] = []
        if plan.planted is not None:
            for (due, finished), name in zip(plan.planted.milestones, MILESTONES, strict=True):
                actual = None if finished is None else today + timedelta(days=finished)
                rows.append((name, today + timedelta(days=due), actual, True))
            rows.append(
                (TASKS[1], today - timedelta(days=3), None, False)
            )  # overdue non-milestone task (a trap)
            rows.append((TASKS[0], today + timedelta(days=20), None, False))
        else:
            for j, name in enumerate(MILESTONES + TASKS[:2]):
                frac = (0.02, 0.25, 0.5, 0.75, 1.0, 0.4, 0.9)[j]
                finish = project.start_date + timedelta(days=round(span * frac) + rng.randint(-5, 5))
                done: date | None = None
                if finish < today:
                    roll = rng.random()
                    late = finish + timedelta(days=rng.randint(1, 25))
                    done = (
                        finish - timedelta(days=rng.randint(0, 7))
                        if roll < 0.65
                        else late
                        if roll < 0.85 and late <= today
                        else None
                    )
                rows.append((name, finish, done, j < len(MILESTONES)))
        tasks: list[PcTask] = []
        previous = project.start_date
        for name, finish, done, milestone in rows:
            self.task_seq += 1
            start = min(previous, finish)
            elapsed = (today - start).days / max(1, (finish - start).days)
            pct = 100 if done else max(0, min(95, round(elapsed * 100)))
            created, updated = self.stamps(anchor=project.created // 1000)
            tasks.append(
                PcTask(self.task_seq, project.id, name, start, finish, done, pct, milestone, created, updated)
            )
            if milestone:
                previous = finish
        missed = [
            t for t in tasks if t.milestone and t.finish < today and (t.actual_finish or today) > t.finish
        ]
        project.schedule_status = (
            "behind" if any(t.actual_finish is None for t in missed) else "at_risk" if missed else "on_track"
        )
        return tasks

    def change_orders(self, plan: _ProjectPlan, project: PcProject) -> None:
        rng = self.rng
        amounts: list[tuple[int, str]] = []
        if plan.planted is not None:
            amounts = [(cents(co.amount), co.status) for co in plan.planted.cos]
            amounts += [
                (rng.randint(2_000, 30_000) * 100, rng.choices(CO_STATUSES, CO_WEIGHTS)[0]) for _ in range(3)
            ]
        else:
            for _ in range(rng.randint(5, 15)):
                roll = rng.random()
                if roll < 0.05:
                    amount = -rng.randint(100_000, 4_000_000)
                elif roll < 0.27 and plan.category == "healthy":
                    amount = rng.randint(5_000_000, 35_000_000)
                elif roll < 0.40:
                    amount = rng.randint(3_000_000, 4_850_000)
                else:
                    amount = round(math.exp(rng.uniform(math.log(50_000), math.log(3_000_000))))
                amounts.append((amount, rng.choices(CO_STATUSES, CO_WEIGHTS)[0]))
        last_day = min(self.today, project.completion_date)
        for n, (amount, status) in enumerate(amounts, start=1):
            self.co_seq += 1
            created, updated = self.stamps(anchor=self.day_between(project.start_date, last_day))
            title = f"{rng.choice(CO_SCOPES)}" + (
                f" — Level {rng.randint(1, 6)}" if rng.random() < 0.3 else ""
            )
            self.c.pc_change_orders[self.co_seq] = PcChangeOrder(
                self.co_seq, project.id, f"{n:03d}", title, status, amount, created, updated
            )
            plan.co_ids.append(self.co_seq)

    def submittals(self, project: PcProject, vendor_ids: list[int]) -> None:
        rng, today = self.rng, self.today
        for n in range(rng.randint(2, 6)):
            section, title = rng.choice(SUBMITTALS)
            self.sub_seq += 1
            due = self.day_between(project.start_date, project.completion_date)
            status = rng.choice(SUBMITTAL_STATUSES)
            returned: date | None = None
            if status in RETURNED:
                returned = due + timedelta(days=rng.randint(-10, 15))
                if returned > today:
                    returned, status = None, "Open"
            revision = rng.choices((0, 1, 2, 3), (60, 25, 10, 5))[0]
            created, updated = self.stamps(anchor=due - timedelta(days=rng.randint(14, 45)))
            self.c.pc_submittals[self.sub_seq] = PcSubmittal(
                self.sub_seq,
                project.id,
                f"{section}-{n + 1}",
                title,
                revision,
                status,
                due,
                returned,
                rng.random() < 0.25,
                rng.choice(vendor_ids),
                created,
                updated,
            )

    def financials(self, plan: _ProjectPlan, project: PcProject, vendor_ids: list[str]) -> list[QboTxn]:
        """Invoices (income), bills and purchases (cost lines on the job) and one estimate."""
        rng, today = self.rng, self.today
        if plan.planted is not None:
            income, cost = cents(plan.planted.income), cents(plan.planted.cost)
        elif plan.category == "none":
            income, cost = 0, round(project.total_value * rng.uniform(0, 0.05))
        else:
            span = max(1, (project.completion_date - project.start_date).days)
            progress = min(1.0, max(0.05, (today - project.start_date).days / span))
            income = round(project.total_value * progress * rng.uniform(0.85, 1.0))
            margin = {"healthy": (15.5, 32.0), "mid": (12.5, 14.5), "low": (-6.0, 11.5)}[plan.category]
            cost = round(income * (1 - rng.uniform(*margin) / 100))
        last_day = min(today, project.completion_date)
        docs: list[QboTxn] = []
        if income > 0:
            for amount in self.split(income, rng.randint(4, 10)):
                txn = self.day_between(project.start_date, last_day)
                due = txn + timedelta(days=30)
                paid = due < today - timedelta(days=30) and rng.random() > 0.08
                balance = 0 if paid else (amount if rng.random() < 0.7 else amount // 2)
                docs.append(self.txn("Invoice", plan.job_id, None, txn, due, amount, balance, (), "", ""))
        if cost > 0:
            sizes = [rng.randint(1, 3) for _ in range(rng.randint(3, 7))]
            purchase_sizes = [rng.randint(1, 3) for _ in range(rng.randint(1, 5))]
            amounts = self.split(cost, sum(sizes) + sum(purchase_sizes))
            lines = [
                QboLine(
                    a,
                    plan.job_id,
                    rng.choice(("Billable", "NotBillable", "HasBeenBilled")),
                    rng.choice(EXPENSE_MEMOS),
                )
                for a in amounts
            ]
            if len(lines) < sum(sizes) + sum(purchase_sizes):  # split fell back to a single amount
                sizes, purchase_sizes = [1], []
            for kind, group_sizes in (("Bill", sizes), ("Purchase", purchase_sizes)):
                for size in group_sizes:
                    chunk, lines = tuple(lines[:size]), lines[size:]
                    if (
                        kind == "Bill"
                        and plan.planted
                        and plan.planted.overhead_in_bill != "0"
                        and not any(d.kind == "Bill" for d in docs)
                    ):
                        chunk += (
                            QboLine(
                                cents(plan.planted.overhead_in_bill),
                                None,
                                "NotBillable",
                                "Office overhead allocation",
                            ),
                        )
                    txn = self.day_between(project.start_date, last_day)
                    total = sum(line.amount for line in chunk)
                    bill_due = txn + timedelta(days=30) if kind == "Bill" else None
                    balance = total if kind == "Bill" and txn > today - timedelta(days=45) else 0
                    status = "" if kind == "Bill" else rng.choice(("Cash", "Check", "CreditCard"))
                    docs.append(
                        self.txn(
                            kind,
                            None,
                            rng.choice(vendor_ids),
                            txn,
                            bill_due,
                            total,
                            balance,
                            chunk,
                            status,
                            "",
                        )
                    )
        estimate_day = project.start_date - timedelta(days=rng.randint(20, 90))
        total = round(project.total_value * rng.uniform(0.9, 1.0))
        status = rng.choices(("Accepted", "Closed", "Pending", "Rejected"), (70, 20, 8, 2))[0]
        docs.append(self.txn("Estimate", plan.job_id, None, estimate_day, None, total, 0, (), status, ""))
        return docs

    def txn(
        self,
        kind: str,
        customer: str | None,
        vendor: str | None,
        txn_date: date,
        due: date | None,
        total: int,
        balance: int,
        lines: tuple[QboLine, ...],
        status: str,
        memo: str,
    ) -> QboTxn:
        tid = self.next_txn_id()
        created, updated = self.stamps(anchor=txn_date)
        return QboTxn(
            kind,
            tid,
            str(1000 + int(tid)),
            customer,
            vendor,
            txn_date,
            due,
            total,
            balance,
            lines,
            status,
            memo,
            created,
            updated,
        )

    def mix_bills(self, bills: list[QboTxn]) -> None:
        """Some bills carry lines for two jobs (line-level CustomerRef matters) and some pure overhead."""
        rng = self.rng
        for a, b in itertools.pairwise(bills):
            if len(a.lines) > 1 and len(b.lines) > 1 and rng.random() < 0.1:
                a.lines, b.lines = a.lines[:-1] + b.lines[-1:], b.lines[:-1] + a.lines[-1:]
                a.total, b.total = sum(x.amount for x in a.lines), sum(x.amount for x in b.lines)
                a.balance, b.balance = min(a.balance, a.total), min(b.balance, b.total)

    # ---- the whole company ---------------------------------------------------------------------------

    def run(self) -> Company:
        c, rng = self.c, self.rng
        self.owners()
        self.vendors()
        client_plans = self.client_plans()
        self.clients(client_plans)
        variants = self.name_variants(client_plans)
        plans = self.project_plans(client_plans)
        pc_vendor_ids, qbo_vendor_ids = list(c.pc_vendors), list(c.qbo_vendors)
        docs: list[QboTxn] = []
        bills_to_mix: list[QboTxn] = []
        for k, plan in enumerate(plans):
            project = self.project(k, plan, c.qbo_customers)
            plan.project = project
            c.pc_projects[project.id] = project
            tasks = self.tasks(plan, project)
            for task in tasks:
                c.pc_tasks[task.id] = task
            self.change_orders(plan, project)
            self.submittals(project, pc_vendor_ids)
            project_docs = self.financials(plan, project, qbo_vendor_ids)
            docs += project_docs
            if plan.planted is None:
                bills_to_mix += [d for d in project_docs if d.kind == "Bill"]
            else:
                self.protect(plan, project, tasks)
        self.mix_bills(bills_to_mix)
        for _ in range(max(2, round(15 * self.scale))):  # overhead bills charged to no job
            line = QboLine(rng.randint(50_000, 2_500_000), None, "NotBillable", rng.choice(EXPENSE_MEMOS))
            day = self.today - timedelta(days=rng.randint(1, 600))
            docs.append(
                self.txn(
                    "Bill",
                    None,
                    rng.choice(qbo_vendor_ids),
                    day,
                    day + timedelta(days=30),
                    line.amount,
                    0,
                    (line,),
                    "",
                    "Overhead",
                )
            )
        tables = {
            "Invoice": c.qbo_invoices,
            "Bill": c.qbo_bills,
            "Purchase": c.qbo_purchases,
            "Estimate": c.qbo_estimates,
        }
        for doc in docs:
            tables[doc.kind][doc.id] = doc
        self.balances(docs)
        c.planted = self.report(plans)
        if variants:
            c.planted["name_variants"] = variants
        c._clock = max((r.updated for t in c.tables.values() for r in t.values()), default=c._clock)
        return c

    def protect(self, plan: _ProjectPlan, project: PcProject, tasks: list[PcTask]) -> None:
        prot = self.c.protected
        prot.add(("procore", "project", project.id))
        prot.add(("quickbooks", "customer", plan.job_id))
        prot.update(("procore", "change_order", cid) for cid in plan.co_ids)
        prot.update(("procore", "task", t.id) for t in tasks)

    def balances(self, docs: list[QboTxn]) -> None:
        customers = self.c.qbo_customers
        for doc in docs:
            if doc.kind == "Invoice" and doc.customer_id in customers:
                customers[doc.customer_id].balance += doc.balance

    def report(self, plans: list[_ProjectPlan]) -> dict[str, object]:
        """The planted scenario as served at ``/_sim/planted``."""
        out: dict[str, list[dict[str, object]]] = {
            "matches": [],
            "near_misses": [],
            "insufficient": [],
            "clients": [],
        }
        by_client: dict[str, list[_ProjectPlan]] = {}
        for plan in plans:
            if plan.planted is not None:
                by_client.setdefault(plan.client.name, []).append(plan)
        hs_by_domain = {h.domain: h for h in self.c.hs_companies.values()}
        for spec in PLANTED:
            client_projects = sorted(by_client[spec.name], key=lambda p: p.name)
            hs = hs_by_domain[spec.domain]
            out["clients"].append(
                {
                    "name": spec.name,
                    "domain": spec.domain,
                    "story": spec.story,
                    "owner_email": self.c.owners[hs.owner_id].email,
                    "hubspot_company_id": hs.id,
                    "quickbooks_customer_id": client_projects[0].client.customer_id,
                    "contract_renewal_date": hs.renewal,
                    "projects": [
                        {
                            "project_number": p.project.project_number if p.project else "",
                            "name": p.name,
                            "procore_project_id": p.project.id if p.project else 0,
                            "quickbooks_job_id": p.job_id,
                        }
                        for p in client_projects
                    ],
                }
            )
            for plan in client_projects:
                assert plan.planted is not None and plan.project is not None
                for co, co_id in zip(plan.planted.cos, plan.co_ids, strict=False):
                    entry: dict[str, object] = {
                        "procore_change_order_id": co_id,
                        "client_name": spec.name,
                        "project_number": plan.project.project_number,
                        "project_name": plan.name,
                        "amount": co.amount,
                        "reason": co.reason,
                    }
                    if co.outcome == "near_miss":
                        entry["failing_condition"] = co.failing
                        out["near_misses"].append(entry)
                    else:
                        out["matches" if co.outcome == "match" else "insufficient"].append(entry)
        return {"rule": RULE_KEY, "conditions": [AMOUNT, MARGIN, CLIENT], **out}


def generate_company(
    seed: int = 42,
    scale: float = 1.0,
    today: date | None = None,
    now: datetime | None = None,
    *,
    name_variants: bool = False,
) -> Company:
    """Generate the deterministic company.  Dates are relative to ``today``, timestamps to ``now``.

    ``name_variants``: about one client in eight is spelled differently in accounting, with no shared
    domain (``planted["name_variants"]`` lists them): work for entity resolution (the demo turns it on)."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of small, acyclic records: collection passes only cost time
    try:
        return _Generator(seed, scale, today or date.today(), now, name_variants).run()  # noqa: DTZ011 - contract: local date
    finally:
        if enabled:
            gc.enable()
