"""Soak: the whole stack under faults for a set time, then checks that nothing was lost or duplicated.

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev CELERY_BROKER_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python -m bench.soak [--minutes 10] [--kill-every 60] [--workers 3] [--tail FILE] \\
        [--database fulcrum_bench_soak]

Creates (afresh) and migrates ``--database`` (default ``fulcrum_bench_soak``) on the server of
DATABASE_URL, starts the bundled simulator, an aiosmtpd sink, gunicorn (``config/gunicorn.py``, 2 workers),
beat and ``--workers`` Celery worker processes (``-c 2`` each) on CELERY_BROKER_URL, loads the three
connections with a full sync, and publishes one rule (a change order of at least 5,000,000 escalates to
the executives by email).

For ``--minutes`` it then sends bursts of Procore webhooks, each about a change order just edited upstream
to a matching amount, some delivered two or three times (duplicates), while faults are injected: upstream
500 bursts and a 2-second rate-limit window every 20 s, the SMTP server down 4 s in every 15, and one worker
SIGKILLed every ``--kill-every`` seconds (and restarted). Then the faults stop, the stack drains, and it
checks:

- the database equals upstream: every edited change order's amount, and the number of change orders;
- every action of every escalation delivered exactly once (outbox rows delivered, each email accepted once);
- one escalation per edited change order, no pending evaluation left, no webhook unprocessed;
- ``verify_audit`` (with a signed anchor taken at the end) passes.

It prints throughput and p50/p95 from each webhook's first send to its change order's decision and to the
SMTP server accepting the email, then where the slowest 10% of escalations spent their time (received,
processed, decided, outbox row, SMTP accepted) and which faults they met, beside the same for all
(``--tail FILE``: every escalation's row and the fault timeline as JSON), and exits non-zero when a check
fails. Target (2-core machine):
nothing lost or duplicated, webhook → SMTP accepted p95 < 5 s under faults.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "fulcrum_bench_soak"
THRESHOLD_CENTS = 500_000_000
RULE = """
- key: soak-big-co
  name: Very large change order
  subject: change_order
  when: {fact: change_order.amount, op: gte, value: 5000000}
  route: executive
  severity: high
  priority: 10
  actions: [email_executives]
  cooldown: 7d
  max_fact_age: 7d
"""
PROCORE_AUTH = "demo-procore-authorization"
FAST_DELIVERY_ENV = {
    # The outbox's retries are the shipped ones (30 s doubling, 8 attempts): an email that met an SMTP
    # outage goes when the mail server answers again, released by the probe (apps/escalations/mail_return.py),
    # not on its own backoff. (Until session 11 the soak retried every 0.5-1 s instead.)
    "FULCRUM_HTTP_MAX_RETRIES": "3",
    "FULCRUM_HTTP_BACKOFF_BASE": "0.2",
    "FULCRUM_HTTP_BACKOFF_CAP": "2",
    "FULCRUM_HTTP_TIMEOUT": "6",
    "FULCRUM_DELIVERY_CLAIM_SECONDS": "10",
    "EMAIL_TIMEOUT": "5",
    "FULCRUM_EVALUATION_COALESCE_SECONDS": "0.5",
    # One email per escalation, not the executives' hourly digest (the default): the soak times each
    # escalation from webhook to SMTP acceptance.
    "FULCRUM_EXECUTIVE_DIGEST": "0",
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class FlappingSmtp:
    """An aiosmtpd sink on a fixed port that can go down (connection refused) and come back."""

    def __init__(self) -> None:
        from tests.smtp import LoopbackSmtp

        self.accepted: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()
        server = LoopbackSmtp(self)
        self.port, self.up, self.down = server.port, server.start, server.stop

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        stamp = time.time()
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            for to in envelope.rcpt_tos:
                self.accepted.append((str(message["Message-ID"]), str(to), stamp))
        return "250 OK"


class Timeline:
    """When each fault happened, for the tail report: upstream faults served (kind, time), SMTP outages
    (down, up), worker kills."""

    def __init__(self) -> None:
        self.upstream: list[tuple[float, str]] = []
        self.smtp_down: list[list[float]] = []
        self.kills: list[float] = []
        self.lock = threading.Lock()

    def watch(self, faults: Any) -> None:
        """Record every fault the simulator serves (its plan's ``match`` wrapped, same answers)."""
        match = faults.match

        def recording(method: str, path: str, path_with_query: str) -> Any:
            rule = match(method, path, path_with_query)
            if rule is not None:
                kind = "429" if rule.kind == "rate_limit" else str(rule.status)
                with self.lock:
                    self.upstream.append((time.time(), kind))
            return rule

        faults.match = recording

    def down(self) -> None:
        self.smtp_down.append([time.time(), math.inf])

    def up(self) -> None:
        if self.smtp_down and self.smtp_down[-1][1] == math.inf:
            self.smtp_down[-1][1] = time.time()


class Stack:
    """gunicorn, beat and the workers as child processes in their own process groups."""

    def __init__(self, env: dict[str, str], logs: Path, workers: int) -> None:
        from config.embedded_servers import free_port

        self.env, self.logs, self.count = env, logs, workers
        self.concurrency = 2
        self.profile_dir: Path | None = None  # workers run solo under cProfile, one stats file each
        self.web_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.generation = 0
        self.kills = 0

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"soak-{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_worker(self, i: int) -> None:
        self.generation += 1
        python: tuple[str, ...] = (sys.executable,)
        pool: tuple[str, ...] = ("-c", str(self.concurrency))
        if self.profile_dir is not None:
            # A prefork child's profile is never written (it leaves with os._exit): one solo process.
            python = (sys.executable, "-m", "cProfile", "-o", str(self.profile_dir / f"worker{i}.prof"))
            pool = ("--pool", "solo")
        self._start(
            f"worker{i}",
            [
                *(*python, "-m", "celery", "-A", "config", "worker", *pool),
                *("-l", "warning"),
                *("--without-mingle", "--without-gossip", "-n", f"soak{i}-{self.generation}@%h"),
            ],
        )

    def start(self) -> None:
        self._start(
            "web",
            [
                *(sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.py"),
                *("--bind", f"127.0.0.1:{self.web_port}", "--workers", "2", "--timeout", "60"),
            ],
        )
        self._start("beat", [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "warning"])
        for i in range(self.count):
            self.start_worker(i)

    def kill_one(self, rng: random.Random) -> str:
        name = f"worker{rng.randrange(self.count)}"
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        self.kills += 1
        self.start_worker(int(name.removeprefix("worker")))
        return name

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_http(url: str, seconds: float = 90) -> None:
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=10)
            return
        except requests.RequestException:
            time.sleep(0.5)
    sys.exit(f"{url} did not answer in {seconds:.0f} s")


def _setup(simulator: Any) -> None:
    from django.contrib.auth.models import Group

    from apps.accounts.demo import demo_connections
    from apps.accounts.roles import EXECUTIVES
    from apps.connectors.models import Connection
    from apps.connectors.services import connection_import, sync_connection
    from apps.rules.evaluation.services import rules_import
    from tests.factories import UserFactory

    for name in ("elena", "edgar"):
        user: Any = UserFactory(username=name, email=f"{name}.exec@fulcrum-demo.test")
        user.groups.add(Group.objects.get(name=EXECUTIVES))
    connection_import(data=demo_connections(simulator.base_url), actor="system:soak")
    started = time.perf_counter()
    for connection in Connection.objects.order_by("slug"):
        sync_connection(connection=connection)
    print(f"initial full sync in {time.perf_counter() - started:.1f} s")
    rules_import(text=RULE, actor="system:soak")


def _faults(
    simulator: Any, smtp: FlappingSmtp, stack: Stack, args: Any, stop: threading.Event, timeline: Timeline
) -> None:
    rng = random.Random(7)
    tick = 0
    next_kill = time.monotonic() + args.kill_every
    while not stop.wait(1):
        tick += 1
        if tick % 20 == 0:  # upstream bursts: six 500s, then a rate-limit window (every call 429 for 2 s)
            # A window, as Procore's limits behave: every call in it is refused with the same
            # X-Rate-Limit-Reset, and calls after the reset go through (developers.procore.com/documentation/
            # rate-limiting). Four 429s each with a fresh reset were four windows back to back: ~12 s.
            simulator.faults.add("status", path_prefix="/rest/", status=500, count=6)
            simulator.faults.add("rate_limit", path_prefix="/rest/", window=2.0, count=None)
        if tick % 15 == 0:
            smtp.down()
            timeline.down()
        elif tick % 15 == 4:
            smtp.up()
            timeline.up()
        if args.kill_every and time.monotonic() >= next_kill:
            timeline.kills.append(time.time())
            print(f"  t+{tick}s SIGKILL {stack.kill_one(rng)}", flush=True)
            next_kill = time.monotonic() + args.kill_every


def _send_webhooks(simulator: Any, url: str, args: Any, sent: dict[int, float], stop_at: float) -> int:
    from apps.simulator.webhooks import change_record, event_for, procore_delivery, send

    company = simulator.company
    rng = random.Random(11)
    candidates = sorted(company.pc_change_orders)
    rng.shuffle(candidates)
    posts = 0
    while time.time() < stop_at and candidates:
        burst = [candidates.pop() for _ in range(min(args.burst, len(candidates)))]
        for i, co_id in enumerate(burst):
            record = change_record(
                company, "procore", "change_order", co_id, grand_total=THRESHOLD_CENTS + 100 * (len(sent) + i)
            )
            headers, body = procore_delivery(PROCORE_AUTH, event_for("procore", "change_order", record))
            sent.setdefault(co_id, time.time())
            for _ in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1)):  # duplicates
                status, answer = send(url, headers, body, timeout=30)
                posts += 1
                if status not in (200, 202):
                    print(f"  webhook answered {status}: {answer}", flush=True)
        time.sleep(args.interval)
    return posts


def _drain(expected: int, seconds: float) -> dict[str, Any]:
    from django.db.models import Count

    from apps.connectors.models import WebhookDelivery
    from apps.escalations.models import Delivery, Escalation
    from apps.rules.models import PendingEvaluation

    deadline = time.monotonic() + seconds
    while True:
        state: dict[str, Any] = {
            "webhooks_open": WebhookDelivery.objects.exclude(status__in=["processed", "rejected"]).count(),
            "pending_evaluations": PendingEvaluation.objects.count(),
            "escalations": Escalation.objects.count(),
            "deliveries_open": Delivery.objects.exclude(state=Delivery.State.DELIVERED).count(),
        }
        done = (
            not state["webhooks_open"]
            and not state["pending_evaluations"]
            and state["escalations"] >= expected
            and not state["deliveries_open"]
        )
        if done or time.monotonic() > deadline:
            state["outbox"] = dict(Delivery.objects.values_list("state").annotate(n=Count("pk")))
            return state
        time.sleep(1)


def _check(
    simulator: Any, smtp: FlappingSmtp, sent: dict[int, float], anchor_dir: Path, timeline: Timeline
) -> tuple[list[str], dict]:
    from decimal import Decimal

    from apps.audit.anchor import anchor_write, audit_verify_with_anchor
    from apps.entities.models import ChangeOrder
    from apps.escalations.actions.email import message_id
    from apps.escalations.models import Delivery, Escalation
    from apps.rules.models import Decision, PendingEvaluation

    problems = []
    company = simulator.company
    amounts = dict(
        ChangeOrder.objects.filter(source__slug="pm", external_id__in=[str(i) for i in sent]).values_list(
            "external_id", "amount"
        )
    )
    wrong = [i for i in sent if amounts.get(str(i)) != Decimal(company.pc_change_orders[i].grand_total) / 100]
    if wrong:
        problems.append(f"{len(wrong)} edited change orders differ from upstream, e.g. {wrong[:5]}")
    live = ChangeOrder.objects.filter(source__slug="pm", deleted_at__isnull=True).count()
    if live != len(company.pc_change_orders):
        problems.append(f"{live} change orders in the database, {len(company.pc_change_orders)} upstream")
    escalations = {int(e.subject_external_id): e for e in _escalations_by_co(Escalation)}
    missing = [i for i in sent if i not in escalations]
    if missing:
        problems.append(f"{len(missing)} edited change orders have no escalation, e.g. {missing[:5]}")
    if Escalation.objects.count() != len(escalations):
        problems.append(f"{Escalation.objects.count()} escalations for {len(escalations)} change orders")
    accepted: dict[tuple[str, str], list[float]] = {}
    for mid, to, stamp in smtp.accepted:
        accepted.setdefault((mid, to), []).append(stamp)
    deliveries = list(Delivery.objects.all())
    undelivered = [d.pk for d in deliveries if d.state != Delivery.State.DELIVERED]
    if undelivered:
        problems.append(f"{len(undelivered)} outbox rows not delivered")
    never = [d.pk for d in deliveries if not accepted.get((message_id(d), d.target))]
    twice = [d.pk for d in deliveries if len(accepted.get((message_id(d), d.target), [])) > 1]
    if never:
        problems.append(f"emails: {len(never)} outbox rows delivered but never accepted by SMTP")
    if twice:
        # SMTP has no idempotency: a worker killed (or a connection cut) after the server's 250 and before
        # the row is marked delivered sends again, with the same Message-ID, which receivers deduplicate.
        print(f"  {len(twice)} emails accepted twice with the same Message-ID (at-least-once SMTP)")
    if len({(message_id(d), d.target) for d in deliveries}) != len(deliveries):
        problems.append("two outbox rows share a message")
    if PendingEvaluation.objects.exists():
        problems.append(f"{PendingEvaluation.objects.count()} pending evaluations left")
    anchors = anchor_dir / "anchors.log"
    anchor_write(path=anchors)
    report = audit_verify_with_anchor(path=anchors)
    if not report.ok:
        problems.append(f"verify_audit: {report.reason}")
    # Latencies, from each change order's first webhook send.
    decided: list[float] = []
    emailed: list[float] = []
    first_decision: dict[int, Any] = {}
    for subject_id, at in (
        Decision.objects.filter(outcome="matched")
        .order_by("evaluated_at")
        .values_list("subject_id", "evaluated_at")
    ):
        first_decision.setdefault(subject_id, at)
    by_escalation: dict[int, list[float]] = {}
    for d in deliveries:
        by_escalation.setdefault(d.escalation_id, []).extend(accepted.get((message_id(d), d.target), []))
    for co_id, sent_at in sent.items():
        escalation = escalations.get(co_id)
        if escalation is None:
            continue
        if escalation.subject_id in first_decision:
            decided.append(first_decision[escalation.subject_id].timestamp() - sent_at)
        stamps = by_escalation.get(escalation.pk)
        if stamps:
            emailed.extend(stamp - sent_at for stamp in stamps)
    figures = {"decided": decided, "emailed": emailed, "emails": len(smtp.accepted), "audit": report}
    figures["tail"] = _tail_rows(sent, escalations, first_decision, deliveries, accepted, timeline)
    figures["redelivered"] = len(twice)
    return problems, figures


STAGES = ("arrival", "processing", "decision", "outbox", "smtp")


def _tail_rows(
    sent: dict[int, float],
    escalations: dict[int, Any],
    first_decision: dict[int, Any],
    deliveries: list[Any],
    accepted: dict[tuple[str, str], list[float]],
    timeline: Timeline,
) -> list[dict[str, Any]]:
    """One row per change order: where its time from webhook sent to the last email accepted went, and
    which faults it met on the way."""
    from apps.connectors.models import WebhookDelivery
    from apps.escalations.actions.email import message_id

    webhooks: dict[int, dict[str, Any]] = {}
    for body, received, processed, attempts in WebhookDelivery.objects.filter(
        connection__slug="pm"
    ).values_list("body", "received_at", "processed_at", "attempts"):
        try:
            co_id = int(json.loads(bytes(body))["resource_id"])
        except (ValueError, KeyError, TypeError):
            continue
        if co_id not in sent or received.timestamp() < sent[co_id] - 1:
            continue  # not this soak's edit (the same id in a delivery from before it was sent)
        row = webhooks.setdefault(co_id, {"received": math.inf, "processed": 0.0, "attempts": 0})
        row["received"] = min(row["received"], received.timestamp())
        row["processed"] = max(row["processed"], processed.timestamp() if processed else math.inf)
        row["attempts"] = max(row["attempts"], attempts)
    outbox: dict[int, dict[str, Any]] = {}
    for d in deliveries:
        row = outbox.setdefault(d.escalation_id, {"created": math.inf, "accepted": 0.0, "attempts": 0})
        row["created"] = min(row["created"], d.created_at.timestamp())
        row["accepted"] = max([row["accepted"], *accepted.get((message_id(d), d.target), [math.inf])])
        row["attempts"] = max(row["attempts"], d.attempts)
    rows = []
    for co_id, sent_at in sent.items():
        escalation = escalations.get(co_id)
        hook = webhooks.get(co_id)
        if escalation is None or hook is None or escalation.pk not in outbox:
            continue
        box = outbox[escalation.pk]
        decided = first_decision.get(escalation.subject_id)
        decided_at = decided.timestamp() if decided else math.inf
        marks = [sent_at, hook["received"], hook["processed"], decided_at, box["created"], box["accepted"]]
        if not all(math.isfinite(m) for m in marks):
            continue
        met = sorted({kind for at, kind in timeline.upstream if hook["received"] <= at <= hook["processed"]})
        rows.append(
            {
                "change_order": co_id,
                "sent_at": sent_at,
                "total": box["accepted"] - sent_at,
                **{stage: marks[i + 1] - marks[i] for i, stage in enumerate(STAGES)},
                "webhook_attempts": hook["attempts"],
                "upstream_faults": met,
                "email_attempts": box["attempts"],
                "smtp_outage": any(
                    down <= box["accepted"] and up >= box["created"] for down, up in timeline.smtp_down
                ),
                "kill": any(sent_at <= at <= box["accepted"] for at in timeline.kills),
            }
        )
    return rows


def _tail_report(rows: list[dict[str, Any]], share: float = 0.1) -> list[str]:
    """Summary lines: the slowest ``share`` of escalations (webhook sent → last email accepted) beside all,
    the mean of each stage and how many met each fault."""
    if not rows:
        return ["tail: no complete escalation to report"]
    ordered = sorted(rows, key=lambda r: r["total"], reverse=True)
    slowest = ordered[: max(1, math.ceil(len(ordered) * share))]
    lines = ["tail: stages are sent → received → processed → decided → outbox row → SMTP accepted (mean s)"]
    for label, group in ((f"slowest {share:.0%}", slowest), ("all", ordered)):
        n = len(group)
        means = ", ".join(f"{stage} {statistics.fmean(r[stage] for r in group):.2f}" for stage in STAGES)
        counts = {
            "webhook retried": sum(r["webhook_attempts"] > 1 for r in group),
            "met 5xx": sum(any(k.startswith("5") for k in r["upstream_faults"]) for r in group),
            "met 429": sum("429" in r["upstream_faults"] for r in group),
            "email retried": sum(r["email_attempts"] > 1 for r in group),
            "SMTP outage": sum(r["smtp_outage"] for r in group),
            "kill": sum(r["kill"] for r in group),
        }
        met = ", ".join(f"{name} {count}" for name, count in counts.items())
        lines.append(f"  {label} (n={n}, total {statistics.fmean(r['total'] for r in group):.2f}): {means}")
        lines.append(f"    {met}")
    return lines


def _escalations_by_co(model: Any) -> list[Any]:
    from apps.entities.models import ChangeOrder

    external = dict(ChangeOrder.objects.filter(source__slug="pm").values_list("pk", "external_id"))
    rows = []
    for escalation in model.objects.filter(subject_type="change_order"):
        escalation.subject_external_id = external[escalation.subject_id]
        rows.append(escalation)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--database",
        default=DB_NAME,
        help="made afresh on DATABASE_URL's server; concurrent runs each need one",
    )
    parser.add_argument(
        "--kill-every", type=float, default=60.0, help="seconds between worker SIGKILLs; 0: none"
    )
    parser.add_argument("--workers", type=int, default=3)
    # The Procore kind's default budget is 600 calls per 10 minutes: each webhook is one fetch, so the
    # default load (2 changes every 3 s) stays under one call a second.
    parser.add_argument("--burst", type=int, default=2, help="change orders edited per webhook burst")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between bursts")
    parser.add_argument("--scale", type=float, default=0.25, help="simulator company size")
    # A webhook whose worker was killed mid-processing is re-queued by beat's sweep when its lease ends.
    parser.add_argument("--drain", type=float, default=300.0, help="seconds allowed to drain at the end")
    parser.add_argument(
        "--tail", type=Path, help="write each escalation's stages and faults met as JSON here"
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from bench.common import fresh_django_database

    fresh_django_database(args.database)
    from django.conf import settings
    from django.db import connection

    from apps.simulator import SimulatorServer, generate_company
    from config.celery import app

    settings.FULCRUM.update({"QUIET_HOURS": "", "RECIPIENT_HOURLY_CAP": 0, "EXECUTIVE_DIGEST": False})
    import logging

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command lines
    smtp = FlappingSmtp()
    smtp.up()
    simulator = SimulatorServer(generate_company(seed=42, scale=args.scale)).start()
    workdir = Path(tempfile.mkdtemp(prefix="fulcrum-soak-"))
    logs = ROOT / ".data" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **FAST_DELIVERY_ENV,
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp.port}",
        "DJANGO_SETTINGS_MODULE": "config.settings.e2e",
        "SITE_URL": "http://fulcrum.soak",
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "600",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        "FULCRUM_AUDIT_ANCHOR_FILE": str(workdir / "beat-anchors.log"),
    }
    (workdir / "metrics").mkdir()
    stack = Stack(env, logs, args.workers)
    timeline = Timeline()
    timeline.watch(simulator.faults)
    stop = threading.Event()
    problems: list[str] = []
    try:
        _setup(simulator)
        app.control.purge()
        stack.start()
        base = f"http://127.0.0.1:{stack.web_port}"
        _wait_http(f"{base}/healthz")
        load = os.getloadavg()[0]
        print(
            f"soak: {args.minutes:g} min, {args.workers} workers × 2, kill every {args.kill_every:g} s; "
            f"{os.cpu_count()} CPUs, load {load:.2f}",
            flush=True,
        )
        faults = threading.Thread(
            target=_faults, args=(simulator, smtp, stack, args, stop, timeline), daemon=True
        )
        faults.start()
        sent: dict[int, float] = {}
        started = time.time()
        posts = _send_webhooks(simulator, f"{base}/webhooks/pm/", args, sent, started + args.minutes * 60)
        sending = time.time() - started
        stop.set()
        faults.join()
        simulator.faults.clear()
        smtp.up()
        timeline.up()
        state = _drain(len(sent), args.drain)
        drained = time.time() - started
        print(
            f"sent {posts} webhook POSTs about {len(sent)} change orders in {sending:.0f} s; "
            f"drained at {drained:.0f} s"
        )
        print(f"after the drain: {state}; worker kills {stack.kills}")
        problems, figures = _check(simulator, smtp, sent, workdir, timeline)
        print(
            f"throughput: {posts / sending:.1f} webhooks/s sent, {len(sent) / drained:.2f} escalations/s "
            f"end to end, {figures['emails']} emails accepted"
        )
        for name, values in (
            ("webhook sent → decision", figures["decided"]),
            ("webhook sent → email accepted by SMTP", figures["emailed"]),
        ):
            if values:
                print(
                    f"{name}: n={len(values)} p50 {statistics.median(values):.2f} s, "
                    f"p95 {_percentile(values, 0.95):.2f} s, max {max(values):.2f} s"
                )
        for line in _tail_report(figures["tail"]):
            print(line)
        if args.tail:
            met = {"upstream": timeline.upstream, "smtp_down": timeline.smtp_down, "kills": timeline.kills}
            args.tail.write_text(json.dumps({"escalations": figures["tail"], "faults": met}, indent=1))
        if figures["emailed"]:
            p95 = _percentile(figures["emailed"], 0.95)
            print(f"target webhook → SMTP p95 < 5 s: {'met' if p95 < 5 else 'MISSED'}")
        print(f"verify_audit: {'intact' if figures['audit'].ok else figures['audit'].reason}")
    finally:
        stop.set()
        stack.stop()
        simulator.stop()
        smtp.down()
        app.control.purge()
        connection.close()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("soak: " + ("PASSED" if not problems else f"FAILED ({len(problems)} problems)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
