"""Escalations through the outbox: escalations/s and p95 from rule match to the email accepted by SMTP.

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev .venv/bin/python -m bench.escalate \
        [-n 200] [--rate 0] [--workers 1] [--concurrency 2]

Creates (afresh) and migrates ``fulcrum_bench_escalate`` on the server of DATABASE_URL, starts the bundled
simulator and an aiosmtpd sink in this process and ``--workers`` Celery worker processes (``-c
--concurrency`` each) on redis db 14, and plants N clients, each a real HubSpot company and QuickBooks
customer in the simulator with a 60,000 change order on a 9%-margin project, plus a published rule whose
actions are ``email_account_manager, email_executives, flag_dashboard, note_crm, note_accounting``.

Then it evaluates the change orders here (the rule matches, the escalation opens and its outbox rows are
committed and queued: the "rule match"), either all at once (``--rate 0``, a burst) or paced at
``--rate`` escalations per second, and waits until every outbox row is delivered. It prints:

- escalations/s: N / (last delivery done − first escalation opened), with the worker count;
- latency from each escalation's ``opened_at`` to each of its emails accepted by the SMTP sink (the sink
  stamps every message on arrival; matched by Message-ID): p50, p95, max; target p95 < 2 s. In a burst
  every escalation waits for the whole batch's evaluation and commit too, and for the queue ahead of it;
  the paced run is the latency a single escalation sees;
- the same to each upstream note's delivery, and a check that every email and note arrived once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import email.policy
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "fulcrum_bench_escalate"
BROKER = "redis://127.0.0.1:6379/14"
ACTIONS = ["email_account_manager", "email_executives", "flag_dashboard", "note_crm", "note_accounting"]
RULE = """
- key: bench-co
  name: Big change order on a thin margin
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: 50000}
      - {fact: project.margin_pct, op: lt, value: 12}
  route: executive
  severity: high
  priority: 10
  actions: [ACTIONS]
  cooldown: 7d
  max_fact_age: 24h
"""


class Sink:
    """aiosmtpd handler: when each message was accepted (time.time()), by Message-ID and recipient."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        stamp = time.time()
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.accepted.append((str(message["Message-ID"]), str(message["To"]), stamp))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _plant(simulator: Any, n: int) -> list[int]:
    from django.contrib.auth.models import Group

    from apps.accounts.demo import demo_connections
    from apps.accounts.roles import ACCOUNT_MANAGERS, EXECUTIVES
    from apps.connectors.models import Connection, StreamState
    from apps.connectors.services import connection_import
    from apps.entities.models import SourceObject
    from apps.rules.evaluation.facts import ENTITY_STREAMS
    from apps.rules.evaluation.services import rules_import
    from tests.factories import (
        ChangeOrderFactory,
        ClientFactory,
        CrmOwnerFactory,
        FinancialLineFactory,
        ProjectFactory,
        UserFactory,
    )

    executive: Any = UserFactory(username="elena", email="elena.exec@fulcrum-demo.test")
    executive.groups.add(Group.objects.get(name=EXECUTIVES))
    connection_import(data=demo_connections(simulator.base_url), actor="system:bench")
    crm, accounting = Connection.objects.get(slug="crm"), Connection.objects.get(slug="accounting")
    synced = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for streams in ENTITY_STREAMS.values():
        for stream in streams:
            StreamState.objects.update_or_create(
                connection=crm, stream=f"{stream}", defaults={"last_success_at": synced}
            )
    managers = []
    for i in range(12):  # a dozen account managers share the clients, as in the demo company
        user: Any = UserFactory(username=f"am{i}", email=f"am{i}@fulcrum-demo.test")
        user.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
        managers.append(CrmOwnerFactory(source=crm, email=user.email, user=user))
    companies = sorted(simulator.company.hs_companies)
    customers = sorted(simulator.company.qbo_customers)
    if len(companies) < n or len(customers) < n:
        sys.exit(f"the simulator has {len(companies)} companies; raise --scale for -n {n}")
    ids = []
    for i in range(n):
        client: Any = ClientFactory(
            source=crm, external_id=str(companies[i]), owner=managers[i % len(managers)]
        )
        SourceObject.objects.create(
            connection=accounting,
            object_type="customer",
            external_id=str(customers[i]),
            name=client.name,
            client=client,
            source_updated_at=synced,
            content_hash="0" * 32,
            synced_at=synced,
        )
        project = ProjectFactory(client=client)
        FinancialLineFactory(project=project, source=accounting, kind="invoice", amount=Decimal("1000000"))
        FinancialLineFactory(project=project, source=accounting, kind="bill", amount=Decimal("910000"))
        change_order: Any = ChangeOrderFactory(project=project, amount=Decimal("60000"))
        ids.append(change_order.pk)
    rules_import(text=RULE.replace("ACTIONS", ", ".join(ACTIONS)), actor="system:bench")
    return ids


def _start_workers(count: int, concurrency: int, smtp_port: int, env_db: str, logs: Path) -> list[Any]:
    env = {
        **os.environ,
        "DATABASE_URL": env_db,
        "CELERY_BROKER_URL": BROKER,
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "DJANGO_SETTINGS_MODULE": "config.settings.e2e",
        "SITE_URL": "http://fulcrum.bench",
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "600",
    }
    workers = []
    for i in range(count):
        log = open(logs / f"bench-escalate-worker-{i}.log", "wb")  # noqa: SIM115 - closed with the process
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-c",
                    str(concurrency),
                    "-l",
                    "warning",
                    "--without-mingle",
                    "--without-gossip",
                    "-n",
                    f"bench-escalate-{i}@%h",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    from config.celery import app

    deadline = time.monotonic() + 60
    while len(app.control.ping(timeout=0.5) or []) < count:
        if time.monotonic() > deadline:
            sys.exit(f"workers did not start; see {logs}")
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="escalations to fire")
    parser.add_argument("--rate", type=float, default=0.0, help="escalations per second; 0 = one burst")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool size per worker process")
    parser.add_argument("--scale", type=float, default=0.25, help="simulator company size")
    args = parser.parse_args()

    os.environ["CELERY_BROKER_URL"] = BROKER
    sys.path.insert(0, str(ROOT))
    from bench.common import fresh_django_database

    fresh_django_database(DB_NAME)
    from aiosmtpd.controller import Controller
    from django.conf import settings
    from django.db import connection
    from django.db.models import Count

    from apps.escalations.delivery import message_id
    from apps.escalations.models import Delivery, Escalation
    from apps.rules.evaluation.services import evaluate_subjects
    from apps.simulator import SimulatorServer, generate_company
    from config.celery import app

    # Noise controls would defer or cap 2·N emails to one inbox; this measures the outbox, not them.
    settings.FULCRUM.update({"QUIET_HOURS": "", "RECIPIENT_HOURLY_CAP": 0, "EXECUTIVE_DIGEST": False})

    sink = Sink()
    smtp_port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    simulator = SimulatorServer(generate_company(seed=42, scale=args.scale)).start()
    workers: list[Any] = []
    try:
        ids = _plant(simulator, args.n)
        app.control.purge()
        db_url = os.environ["DATABASE_URL"]
        logs = ROOT / ".data" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        workers = _start_workers(args.workers, args.concurrency, smtp_port, db_url, logs)
        print(
            f"{args.n} escalations, {'burst' if not args.rate else f'{args.rate:g}/s'}; "
            f"{args.workers} worker process(es) × {args.concurrency} = {args.workers * args.concurrency} "
            f"concurrent deliveries; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}"
        )
        started = time.time()
        if args.rate:
            for i, pk in enumerate(ids):
                evaluate_subjects(subject_type="change_order", ids=[pk], trigger="sync")
                pause = started + (i + 1) / args.rate - time.time()
                if pause > 0:
                    time.sleep(pause)
        else:
            evaluate_subjects(subject_type="change_order", ids=ids, trigger="sync")
        fired = time.time()
        expected = args.n * len(ACTIONS)
        deadline = time.monotonic() + 300
        while Delivery.objects.filter(state=Delivery.State.DELIVERED).count() < expected:
            if time.monotonic() > deadline:
                states = dict(Delivery.objects.values_list("state").annotate(n=Count("pk")))
                sys.exit(f"not all delivered after 300 s: {states}")
            time.sleep(0.2)
        time.sleep(1)  # anything arriving twice would arrive now
        opened = dict(Escalation.objects.values_list("pk", "opened_at"))
        rows = list(Delivery.objects.all())
        done = max(d.delivered_at for d in rows if d.delivered_at)
        first = min(opened.values())
        by_message: dict[tuple[str, str], list[float]] = {}
        for mid, to, stamp in sink.accepted:
            by_message.setdefault((mid, to), []).append(stamp)
        email_latency, note_latency, missing, twice = [], [], 0, 0
        for d in rows:
            if d.action.startswith("email_"):
                stamps = by_message.get((message_id(d), d.target), [])
                missing += not stamps
                twice += len(stamps) > 1
                if stamps:
                    email_latency.append(min(stamps) - opened[d.escalation_id].timestamp())
            elif d.action.startswith("note_") and d.delivered_at:
                note_latency.append((d.delivered_at - opened[d.escalation_id]).total_seconds())
        notes = len(simulator.notes)
        span = (done - first).total_seconds()
        print(
            f"fired in {fired - started:.2f} s; all {expected} outbox rows delivered "
            f"{span:.2f} s after the first match"
        )
        print(f"throughput: {args.n / span:.1f} escalations/s ({expected / span:.0f} outbox rows/s)")
        if not args.rate:
            # A burst commits its escalations at the end of evaluate_subjects: the outbox starts then.
            outbox = done.timestamp() - fired
            print(
                f"outbox alone (from the burst's commit): {args.n / outbox:.1f} escalations/s "
                f"({expected / outbox:.0f} rows/s) over {outbox:.2f} s"
            )
        for name, values in (
            ("match → email accepted by SMTP", email_latency),
            ("match → note delivered", note_latency),
        ):
            print(
                f"{name}: n={len(values)} p50 {statistics.median(values):.3f} s, "
                f"p95 {_percentile(values, 0.95):.3f} s, max {max(values):.3f} s"
            )
        p95 = _percentile(email_latency, 0.95)
        print(f"target p95 < 2 s: {'met' if p95 < 2 else 'MISSED'}")
        print(
            f"emails: {len(sink.accepted)} received, {missing} missing, {twice} twice; "
            f"upstream notes: {notes} (expected {2 * args.n})"
        )
        print(f"attempts: {sum(d.attempts for d in rows)} for {len(rows)} rows")
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        simulator.stop()
        controller.stop()
        app.control.purge()
        connection.close()


if __name__ == "__main__":
    main()
