"""Webhooks as users wait for them: arrival → entity updated → decision, at a paced rate, nothing flushed.

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev .venv/bin/python -m bench.webhooks \
        [--rate 100] [--seconds 20] [--workers 2] [--concurrency 2] [--batch 50] [--profile DIR] \
        [--database fulcrum_bench_hooks] [--redis-db 13] [--acceptance [-n 3000]]

Default (latency): creates (afresh) and migrates ``fulcrum_bench_hooks``, starts the bundled simulator,
gunicorn (2 workers), beat and ``--workers`` Celery worker processes (``-c --concurrency``) on redis db 13,
syncs the Procore connection and publishes one rule (a change order of at least 5,000,000 is flagged). Then
it sends ``--rate`` Procore webhooks a second for ``--seconds`` seconds, each about a different change order
just edited upstream to a matching amount, and waits until every delivery is processed and every change
order decided (nothing is flushed). It prints p50/p95 from each webhook's arrival (its POST) to the
change order updated in the database (the delivery's ``processed_at``, stamped in the transaction that
writes the entity) and to the rule's decision (``evaluated_at``); target: arrival → entity p95 < 2 s at
100 deliveries/s. Its reference, measured in the same run: the service time of one delivery processed
in this process with nothing queued (claim, fetch, apply), and the ratio of the p50 to it; the load
average before and after. Where the machine's CPU went, from /proc before the first send and after the
drain: the workers, gunicorn, beat, this process (senders and polling; the simulator's request threads
counted apart), this database's PostgreSQL backends, the rest of PostgreSQL and Redis (shared with
anything else on the machine), per delivery. ``--batch`` sets ``FULCRUM_WEBHOOK_BATCH_SIZE`` for the
workers (1: one delivery per task); ``--profile DIR`` runs each worker as one solo process under cProfile
(DIR/worker<i>.prof) and prints the top of the merged profile. ``--database`` / ``--redis-db`` keep
concurrent runs apart.

``--acceptance``: the receiver alone: N signed QuickBooks deliveries from 8 threads, accepted/s and
p50/p99, against a bare Django view that inserts one row (``bench.bare_settings``, the reference). Its
queued tasks are flushed at the end (that mode measures acceptance only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "fulcrum_bench_hooks"
BROKER = "redis://127.0.0.1:6379/13"
VERIFIER = "bench-verifier-token"
SLUG = "bench-qbo"
THREADS = 8
SENDERS = 32  # latency mode: enough senders that a slow answer never lowers the paced rate


def _database_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1/fulcrum_dev")
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{DB_NAME}"))


def _env(settings_module: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "False",
        "DJANGO_SETTINGS_MODULE": settings_module,
        "LOG_LEVEL": "ERROR",
        "CONN_MAX_AGE": "600",
    }


def _recreate_database() -> None:
    import psycopg

    parts = urllib.parse.urlsplit(_database_url())
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=_env("config.settings.test"),
        check=True,
    )


def _setup_django() -> None:
    os.environ.update(_env("config.settings.test"))
    import django

    django.setup()


class Server:
    """gunicorn with 2 sync workers on a free loopback port."""

    def __init__(self, settings_module: str, probe: str) -> None:
        from config.embedded_servers import free_port

        self.probe = probe
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--log-level",
                "error",
                "--backlog",
                "2048",
            ],
            cwd=ROOT,
            env=_env(settings_module),
        )

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    requests.get(f"{self.base_url}{self.probe}", timeout=10)
                    return self
                except requests.ConnectionError:
                    time.sleep(0.2)
            raise RuntimeError("gunicorn did not start")
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _load(url: str, bodies: list[tuple[dict[str, str], bytes]]) -> tuple[float, list[float], dict[int, int]]:
    """Send every body from THREADS threads; (seconds, latencies, count per status)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    shares = [bodies[i::THREADS] for i in range(THREADS)]
    start_gate = threading.Barrier(THREADS + 1)

    def worker(share: list[tuple[dict[str, str], bytes]]) -> None:
        session = requests.Session()
        mine: list[float] = []
        codes: dict[int, int] = {}
        start_gate.wait()
        for headers, body in share:
            began = time.perf_counter()
            status = session.post(url, data=body, headers=headers, timeout=30).status_code
            mine.append(time.perf_counter() - began)
            codes[status] = codes.get(status, 0) + 1
        with lock:
            latencies.extend(mine)
            for code, n in codes.items():
                statuses[code] = statuses.get(code, 0) + n

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies, statuses


def _quantile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else 0.0
    )


def _report(name: str, n: int, seconds: float, latencies: list[float], statuses: dict[int, int]) -> float:
    accepted = statuses.get(202, 0)
    rate = accepted / seconds
    print(
        f"{name:<10} {n} sent in {seconds:.2f}s: {rate:,.0f} accepted/s; "
        f"p50 {_quantile(latencies, 0.5) * 1000:.1f} ms, p99 {_quantile(latencies, 0.99) * 1000:.1f} ms; "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    return rate


def _warm(url: str, make: Callable[[int], tuple[dict[str, str], bytes]]) -> None:
    """A few requests per worker first: connections, imports and the broker pool are per process."""
    session = requests.Session()
    for i in range(40):
        headers, body = make(10_000_000 + i)
        session.post(url, data=body, headers=headers, timeout=30)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, tuple[int, str, float, str]]:
    """Every process: pid → (process group, name, CPU seconds so far, command line)."""
    found: dict[int, tuple[int, str, float, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # After the name: state ppid pgrp session ... utime (14th field of the line) stime (15th).
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        found[int(entry)] = (int(fields[2]), name, cpu, cmdline)
    return found


def _cpu_shares(groups: dict[str, int], database: str) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each process of the stack's process groups, of this database's backends, of
    the rest of PostgreSQL and of Redis, by pid."""
    shares: dict[str, dict[int, float]] = {
        name: {} for name in [*groups, "postgres (this database)", "postgres (other)", "redis"]
    }
    by_group = {pgrp: name for name, pgrp in groups.items()}
    for pid, (pgrp, name, cpu, cmdline) in _proc_stats().items():
        if pgrp in by_group:
            shares[by_group[pgrp]][pid] = cpu
        elif name == "postgres" or cmdline.startswith("postgres:"):
            mine = f" {database} " in cmdline
            shares["postgres (this database)" if mine else "postgres (other)"][pid] = cpu
        elif name.startswith("redis-server"):
            shares["redis"][pid] = cpu
    return shares


def _cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds between two snapshots: of the processes alive at the second (a process that ended in
    between, another session's backend say, is not counted)."""
    return {
        name: sum(cpu - before.get(name, {}).get(pid, 0.0) for pid, cpu in pids.items())
        for name, pids in after.items()
    }


def _count_simulator_cpu(simulator: Any) -> list[float]:
    """The CPU time of the simulator's request threads (one per connection), summed into the list."""
    total = [0.0, 0.0]  # seconds, connections
    lock = threading.Lock()
    httpd = simulator._httpd
    serve = httpd.process_request_thread

    def counted(request: Any, client_address: Any) -> None:
        began = time.thread_time()
        try:
            serve(request, client_address)
        finally:
            with lock:
                total[0] += time.thread_time() - began
                total[1] += 1

    httpd.process_request_thread = counted
    return total


def _print_profile(directory: Path, top: int = 45) -> None:
    import pstats

    files = sorted(str(path) for path in directory.glob("worker*.prof"))
    if not files:
        print(f"no worker profile in {directory}")
        return
    stats = pstats.Stats(files[0])
    for path in files[1:]:
        stats.add(path)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    global DB_NAME, BROKER
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="webhooks per second (default 100)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool size per worker (default 2)")
    parser.add_argument("--drain", type=float, default=600.0, help="seconds allowed to process everything")
    parser.add_argument("--acceptance", action="store_true", help="the receiver alone vs a bare view")
    parser.add_argument("-n", type=int, default=3000, help="--acceptance: deliveries to send")
    parser.add_argument("--batch", type=int, default=None, help="FULCRUM_WEBHOOK_BATCH_SIZE for the workers")
    parser.add_argument("--profile", type=Path, default=None, help="run the workers solo under cProfile here")
    parser.add_argument("--database", default=DB_NAME, help=f"the database made afresh (default {DB_NAME})")
    parser.add_argument("--redis-db", type=int, default=13, help="the broker's Redis database (default 13)")
    args = parser.parse_args(argv)
    DB_NAME = args.database
    BROKER = f"redis://127.0.0.1:6379/{args.redis_db}"
    load_before = os.getloadavg()
    try:
        return _acceptance(args) if args.acceptance else _latency(args)
    finally:
        print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")


LATENCY_RULE = """
- key: bench-hooks-big-co
  name: Very large change order
  subject: change_order
  when: {fact: change_order.amount, op: gte, value: 5000000}
  route: executive
  severity: high
  priority: 10
  actions: [flag_dashboard]
  cooldown: 7d
  max_fact_age: 7d
"""


def _latency(args: Any) -> int:
    from bench.common import fresh_django_database
    from bench.soak import PROCORE_AUTH, THRESHOLD_CENTS, Stack, _percentile, _wait_http

    os.environ["CELERY_BROKER_URL"] = BROKER
    fresh_django_database(DB_NAME)
    import tempfile

    from apps.accounts.demo import demo_connections
    from apps.connectors.models import Connection, WebhookDelivery
    from apps.connectors.services import connection_import, sync_stream
    from apps.connectors.webhooks.processing import process_delivery
    from apps.rules.evaluation.services import rules_import
    from apps.rules.models import Decision
    from apps.simulator import SimulatorServer, generate_company
    from apps.simulator.webhooks import change_record, event_for, procore_delivery
    from config.celery import app

    wanted = int(args.rate * args.seconds)
    scale = 0.25
    company = generate_company(seed=42, scale=scale)
    while len(company.pc_change_orders) < wanted + 100:
        scale *= 2
        company = generate_company(seed=42, scale=scale)
    simulator = SimulatorServer(company).start()
    simulator_cpu = _count_simulator_cpu(simulator)
    workdir = Path(tempfile.mkdtemp(prefix="fulcrum-bench-hooks-"))
    (workdir / "metrics").mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "CELERY_BROKER_URL": BROKER,
        "DJANGO_SETTINGS_MODULE": "config.settings.e2e",
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "600",
        "FULCRUM_EVALUATION_COALESCE_SECONDS": "0.5",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        "FULCRUM_AUDIT_ANCHOR_FILE": str(workdir / "anchors.log"),
    }
    if args.batch is not None:
        env["FULCRUM_WEBHOOK_BATCH_SIZE"] = str(args.batch)
    logs = ROOT / ".data" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(env, logs, args.workers)
    stack.concurrency = args.concurrency
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        for old in args.profile.glob("worker*.prof"):
            old.unlink()
        stack.profile_dir = args.profile.resolve()
    try:
        connection_import(data=demo_connections(simulator.base_url), actor="system:bench")
        pm = Connection.objects.get(slug="pm")
        started = time.perf_counter()
        for stream in ("projects", "change_orders"):
            sync_stream(connection=pm, stream=stream)
        print(f"Procore projects and change orders synced in {time.perf_counter() - started:.1f} s")
        rules_import(text=LATENCY_RULE, actor="system:bench")
        candidates = sorted(company.pc_change_orders)

        def edit(co_id: int, n: int) -> tuple[dict[str, str], bytes]:
            record = change_record(
                company, "procore", "change_order", co_id, grand_total=THRESHOLD_CENTS + 100 * n
            )
            return procore_delivery(PROCORE_AUTH, event_for("procore", "change_order", record))

        # The reference: a few deliveries processed here, one at a time, nothing queued.
        from django.test import Client as DjangoClient

        reference_ids = candidates[-20:]
        local = DjangoClient()
        service = []
        for n, co_id in enumerate(reference_ids):
            headers, body = edit(co_id, n)
            response = local.post(
                "/webhooks/pm/", data=body, content_type="application/json", headers=headers
            )
            began = time.perf_counter()
            outcome = process_delivery(int(response.json()["id"]))
            service.append(time.perf_counter() - began)
            assert outcome.status == "processed", outcome.error
        reference = statistics.median(service)
        # The same in one batch: 50 deliveries waiting, one call processes them all.
        from apps.connectors.webhooks.processing import process_deliveries

        waiting = [
            local.post("/webhooks/pm/", data=body, content_type="application/json", headers=headers).json()[
                "id"
            ]
            for headers, body in (edit(co_id, 500 + n) for n, co_id in enumerate(candidates[-70:-20]))
        ]
        began = time.perf_counter()
        outcomes = process_deliveries(int(waiting[0]), limit=len(waiting))
        batched = (time.perf_counter() - began) / len(waiting)
        assert all(o.status == "processed" for o in outcomes.values()) and len(outcomes) == len(waiting)
        app.control.purge()
        stack.start()
        base = f"http://127.0.0.1:{stack.web_port}"
        _wait_http(f"{base}/healthz")
        url = f"{base}/webhooks/pm/"
        targets = candidates[:wanted]
        bodies = [edit(co_id, 1000 + n) for n, co_id in enumerate(targets)]
        sent: dict[int, float] = {}
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        print(
            f"sending {wanted} Procore webhooks at {args.rate:g}/s for {args.seconds:g} s; "
            f"{args.workers} worker process(es) × {args.concurrency}, 2 gunicorn workers; "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        groups = {name: proc.pid for name, proc in stack.procs.items()}
        cpu_before = _cpu_shares(groups, DB_NAME)
        own_before, simulator_before = time.process_time(), simulator_cpu[0]
        began = time.time()

        def sender(offset: int) -> None:
            session = requests.Session()
            for i in range(offset, wanted, SENDERS):
                pause = began + i / args.rate - time.time()
                if pause > 0:
                    time.sleep(pause)
                headers, body = bodies[i]
                at = time.time()
                status = session.post(url, data=body, headers=headers, timeout=30).status_code
                with lock:
                    sent[targets[i]] = at
                    statuses[status] = statuses.get(status, 0) + 1

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sending = time.time() - began
        print(f"sent {wanted} in {sending:.1f} s ({wanted / sending:.0f}/s); statuses {statuses}", flush=True)
        hooks = WebhookDelivery.objects.filter(received_at__gte=dt.datetime.fromtimestamp(began, dt.UTC))
        deadline = time.monotonic() + args.drain
        while True:
            open_hooks = hooks.exclude(status=WebhookDelivery.Status.PROCESSED).count()
            decided = (
                Decision.objects.filter(
                    outcome="matched", evaluated_at__gte=dt.datetime.fromtimestamp(began, dt.UTC)
                )
                .values("subject_id")
                .distinct()
                .count()
            )
            if (not open_hooks and decided >= len(targets)) or time.monotonic() > deadline:
                break
            time.sleep(1)
        drained = time.time() - began
        cpu_after = _cpu_shares(groups, DB_NAME)
        simulator_used = simulator_cpu[0] - simulator_before
        own_used = time.process_time() - own_before - simulator_used
        print(
            f"drained {drained:.1f} s after the first send: {open_hooks} deliveries open, {decided} decided"
        )
        used = _cpu_used(cpu_before, cpu_after)
        used["simulator (request threads)"] = simulator_used
        used["bench (senders, polling)"] = own_used
        total = sum(used.values())
        share = total / max(drained, 1e-9) / (os.cpu_count() or 1)
        print(
            f"CPU from the first send to the drain: {total:.1f} s on {os.cpu_count()} cores over "
            f"{drained:.0f} s ({share:.0%} of the machine)"
        )
        for name, seconds in sorted(used.items(), key=lambda item: -item[1]):
            print(f"  {name:<28} {seconds:7.1f} s  {seconds / wanted * 1000:6.2f} ms/delivery")
        print(f"  simulator connections: {simulator_cpu[1]:.0f}")
        from apps.entities.models import ChangeOrder

        external = dict(
            ChangeOrder.objects.filter(source=pm, external_id__in=[str(t) for t in targets]).values_list(
                "external_id", "pk"
            )
        )
        processed: dict[str, dt.datetime] = {}
        for raw, processed_at in hooks.filter(status=WebhookDelivery.Status.PROCESSED).values_list(
            "body", "processed_at"
        ):
            resource = str(json.loads(bytes(raw))["resource_id"])
            if processed_at is not None:
                processed[resource] = min(processed_at, processed.get(resource, processed_at))
        first_decision: dict[int, dt.datetime] = {}
        for subject_id, evaluated_at in (
            Decision.objects.filter(
                outcome="matched", evaluated_at__gte=dt.datetime.fromtimestamp(began, dt.UTC)
            )
            .order_by("evaluated_at")
            .values_list("subject_id", "evaluated_at")
        ):
            first_decision.setdefault(subject_id, evaluated_at)
        entity_latency, decision_latency = [], []
        for co_id, sent_at in sent.items():
            if str(co_id) in processed:
                entity_latency.append(processed[str(co_id)].timestamp() - sent_at)
            pk = external.get(str(co_id))
            if pk in first_decision:
                decision_latency.append(first_decision[pk].timestamp() - sent_at)
        for name, values in (
            ("arrival → entity updated", entity_latency),
            ("arrival → decision", decision_latency),
        ):
            if values:
                print(
                    f"{name}: n={len(values)} p50 {statistics.median(values):.2f} s, "
                    f"p95 {_percentile(values, 0.95):.2f} s, max {max(values):.2f} s"
                )
        if entity_latency:
            p95 = _percentile(entity_latency, 0.95)
            print(
                f"target arrival → entity p95 < 2 s: {'met' if p95 < 2 else 'MISSED'} ({p95 / 2:.2f}× target)"
            )
            slots = args.workers * args.concurrency
            ratio = statistics.median(entity_latency) / reference
            print(
                f"reference: one delivery processed in this process, nothing queued (claim, fetch, apply): "
                f"median {reference * 1000:.0f} ms; p50 latency / reference = {ratio:.1f}×; capacity at that "
                f"service time on {slots} slots: {slots / reference:.0f}/s"
            )
            print(
                f"reference: 50 waiting deliveries processed in one batch here: {batched * 1000:.1f} ms each"
            )
        return 0 if len(entity_latency) == len(targets) else 1
    finally:
        stack.stop()
        simulator.stop()
        app.control.purge()
        if args.profile is not None:
            _print_profile(args.profile)


def _acceptance(args: Any) -> int:
    _recreate_database()
    _setup_django()
    import redis

    from apps.connectors.models import Connection, WebhookDelivery
    from apps.simulator.webhooks import qbo_delivery, qbo_entity

    connection = Connection(slug=SLUG, kind="quickbooks", base_url="http://127.0.0.1:9/")
    connection.options = {"realm_id": "9130350000000001"}
    connection.webhook_secrets = [VERIFIER]
    connection.save()
    stamp = int(time.time() * 1000) // 1000 * 1000

    def delivery(i: int) -> tuple[dict[str, str], bytes]:
        entity = qbo_entity("invoice", 1 + i % 5000, "Update", last_updated=stamp + i * 1000)
        return qbo_delivery(VERIFIER, [entity])

    bodies = [delivery(i) for i in range(args.n)]
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{THREADS} client threads, 2 gunicorn workers"
    )
    unique_sent = len({body for _, body in bodies})
    rates = {}
    try:
        with Server("config.settings.test", probe="/webhooks/-/") as server:
            url = f"{server.base_url}/webhooks/{SLUG}/"
            _warm(url, delivery)
            warm = WebhookDelivery.objects.count()
            seconds, latencies, statuses = _load(url, bodies)
            rates["webhook"] = _report("webhook", args.n, seconds, latencies, statuses)
        stored = WebhookDelivery.objects.count() - warm
        print(f"{'':<10} stored {stored}, unique sent {unique_sent}: lost = {unique_sent - stored}")

        with Server("bench.bare_settings", probe="/ping/") as server:
            url = f"{server.base_url}/bare/{connection.pk}/"
            _warm(url, delivery)
            seconds, latencies, statuses = _load(url, bodies)
            rates["bare"] = _report("bare view", args.n, seconds, latencies, statuses)
        print(f"ratio webhook / bare insert view: {rates['webhook'] / rates['bare']:.2f} (target >= 0.6)")
    finally:
        queued = redis.Redis.from_url(BROKER)
        print(f"queued tasks left in redis db 13: {queued.llen('celery')} (flushed)")
        queued.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
