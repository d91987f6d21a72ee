"""Escalations through the outbox: escalations/s and p95 from rule match to the email accepted by SMTP.

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev .venv/bin/python -m bench.escalate \
        [-n 200] [--rate 0] [--workers 1] [--concurrency 4] [--writeback-workers 1] \
        [--writeback-concurrency 2] [--compare] \
        [--database fulcrum_bench_escalate] [--broker redis://127.0.0.1:6379/14] [--sink-in-process] \
        [--timeline] [--writeback-nice 10]

Creates (afresh) and migrates ``--database`` on the server of DATABASE_URL, starts the bundled simulator
(sized for N: ``--scale`` is raised until it has N HubSpot companies) in this process and an aiosmtpd sink
in a process of its own (``--sink-in-process``: in a thread of this one, sharing its GIL with the simulator),
``--workers`` Celery worker processes (``-c --concurrency`` each, default 4) on the ``delivery`` queue
(emails) and every queue but ``writeback``, and ``--writeback-workers`` processes (``-c
--writeback-concurrency`` each, default 2) on ``writeback`` (the vendor notes) at ``nice
--writeback-nice`` (default 10, set as the Procfile sets it: ``WORKER_NICE``, which the worker applies to
itself and, in a session of its own, to its session's autogroup): the defaults are the Procfile's
``worker`` and ``writeback`` as they run by default (``WORKER_CONCURRENCY`` 4, ``WRITEBACK_CONCURRENCY``
2, ``WRITEBACK_NICE`` 10), on ``--broker`` (give concurrent runs
their own database and broker). It plants N
clients, each a real HubSpot company and QuickBooks customer in the simulator with a 60,000 change order
on a 9%-margin project, plus a published rule whose actions are ``email_account_manager, email_executives,
flag_dashboard, note_crm, note_accounting``. ``--compare`` runs the burst four times: with ``--workers``
email worker processes, twice with twice as many, then with ``--workers`` again (ABBA: a later burst meets
the earlier ones' rows, dead tuples and spent vendor budgets, so each side gets one early and one late
turn), and prints each side's mean p95 and email span and their ratio (more processes must be faster, not
slower).

Then it evaluates the change orders here (the rule matches, the escalation opens and its outbox rows are
committed and queued: the "rule match"), either all at once (``--rate 0``, a burst) or paced at
``--rate`` escalations per second, and waits until every outbox row is delivered. It prints:

- escalations/s: N / (last delivery done − first escalation opened), with the worker count;
- latency from each escalation's ``opened_at`` to each of its emails accepted by the SMTP sink (the sink
  stamps every message on arrival; matched by Message-ID): p50, p95, max; target p95 < 2 s. In a burst
  every escalation waits for the whole batch's evaluation and commit too, and for the queue ahead of it;
  the paced run is the latency a single escalation sees;
- with ``--timeline``, where that time goes: the workers run ``bench.escalate_probe`` (the project's app
  plus stamps around each stage of a chunk) and the run prints, per email, the stages from the match (the
  escalation's ``opened_at``, which is its decision's ``evaluated_at``) to the sink's acceptance as
  percentiles (commit, task published, picked up, claimed, rendered, SMTP sent, recorded), and the CPU of
  each process (every worker pool process, the sink, this process, the PostgreSQL server's processes),
  and how many tasks of each kind every worker ran (a vendor note deferred by its rate budget comes back
  as a task of its own);
- the same to each upstream note's delivery, and a check that every email and note arrived once;
- its reference, measured in the same run: the same number of emails sent straight through the product's
  SMTP backend (Django's, the envelope pipelined: the sink announces ``PIPELINING`` as production servers
  do) from one process, one connection per message (no queue, no database), and over one connection
  (as the outbox's chunks send them), one client process as fast as the sink takes them, and the ratio of
  the outbox's email span to the latter, the path the outbox uses; the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import email.parser
import email.policy
import logging
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

from apps.devstack.mailsink import Pipelining

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "fulcrum_bench_escalate"
BACKEND = "apps.escalations.smtp.EmailBackend"
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


class Sink(Pipelining):
    """aiosmtpd handler: when each message was accepted (time.time()). It does no more per message than
    keep it: the headers are parsed afterwards (``by_message``), and aiosmtpd's per-command INFO log
    ("mail.log") is off. ``start(port, own_process=True)`` serves it from a process of its own, as a real
    SMTP server is, instead of sharing this process's GIL with the simulator and the evaluation, and in a
    session of its own, as a mail server runs as a service: with the kernel's autogroups the CPU is shared
    between sessions, and each worker runs in its own, so a sink in this process's session got a smaller
    share with every worker process added."""

    def __init__(self) -> None:
        self.accepted: list[tuple[bytes, float]] = []
        self.lock = threading.Lock()
        self.stop: Any = None
        self.pid = os.getpid()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        stamp = time.time()
        with self.lock:
            self.accepted.append((envelope.content, stamp))
        return "250 OK"

    def start(self, port: int, *, own_process: bool) -> None:
        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)
        if not own_process:
            controller = Controller(self, hostname="127.0.0.1", port=port)
            controller.start()
            self.stop = controller.stop
            return
        import multiprocessing

        context = multiprocessing.get_context("fork")
        received, sent = context.Pipe(duplex=False)
        process = context.Process(target=_serve_sink, args=(port, sent), daemon=True)
        process.start()
        sent.close()
        self.pid = process.pid or self.pid

        def drain() -> None:
            while True:
                try:
                    item = received.recv()
                except EOFError:
                    return
                with self.lock:
                    self.accepted.append(item)

        threading.Thread(target=drain, daemon=True).start()
        while True:  # until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)

        def stop() -> None:
            process.terminate()
            process.join(5)

        self.stop = stop

    def by_message(self) -> dict[tuple[str, str], list[float]]:
        """When each (Message-ID, To) was accepted, every time it was."""
        parser = email.parser.BytesHeaderParser(policy=email.policy.default)
        stamps: dict[tuple[str, str], list[float]] = {}
        with self.lock:
            accepted = list(self.accepted)
        for content, stamp in accepted:
            headers = parser.parsebytes(content)
            stamps.setdefault((str(headers["Message-ID"]), str(headers["To"])), []).append(stamp)
        return stamps


def _serve_sink(port: int, sent: Any) -> None:
    """The sink's process: stamps each message as it is accepted and hands it to the bench over a pipe."""
    from aiosmtpd.controller import Controller

    os.setsid()  # a session (and autogroup) of its own, as a mail server's service has

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    lock = threading.Lock()

    class Handler(Pipelining):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            stamp = time.time()
            with lock:
                sent.send((envelope.content, stamp))
            return "250 OK"

    Controller(Handler(), hostname="127.0.0.1", port=port).start()
    threading.Event().wait()


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
    from apps.rules.models import EvaluationRun
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
    # The bursts evaluate the subjects themselves; the publish's run (its task purged with the queue) is
    # closed, or a worker started a minute later re-sends it (``publish_runs_requeue``) and it opens
    # every later burst's escalations early, in a worker.
    now = dt.datetime.now(dt.UTC)
    EvaluationRun.objects.filter(completed_at__isnull=True).update(started_at=now, completed_at=now)
    return ids


def _start_workers(
    specs: list[tuple[str, int, str, int]],
    smtp_port: int,
    env_db: str,
    logs: Path,
    broker: str,
    timeline: Path | None = None,
) -> list[Any]:
    """One Celery worker process per (name, concurrency, queues, nice) in ``specs``, each in a session of its
    own (as a process manager starts it) at that CPU priority (``WORKER_NICE``, as the Procfile sets it
    for the writeback worker); waits until all answer.
    ``timeline``: run ``bench.escalate_probe``'s app instead, writing its stamps there."""
    env = {
        **os.environ,
        "DATABASE_URL": env_db,
        "CELERY_BROKER_URL": broker,
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "DJANGO_SETTINGS_MODULE": "config.settings.e2e",
        "SITE_URL": "http://fulcrum.bench",
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "600",
    }
    if timeline is not None:
        env["BENCH_TIMELINE_DIR"] = str(timeline)
    workers = []
    for name, concurrency, queues, nice in specs:
        log = open(logs / f"bench-escalate-{name}.log", "wb")  # noqa: SIM115 - closed with the process
        workers.append(
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "bench.escalate_probe" if timeline else "config"),
                    *("worker", "-c", str(concurrency)),
                    *("-Q", queues, "-l", "warning", "--without-mingle", "--without-gossip"),
                    *("-n", f"bench-escalate-{name}@%h"),
                ],
                cwd=ROOT,
                env={**env, "WORKER_NICE": str(nice)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    from config.celery import app

    deadline = time.monotonic() + 120
    while len(app.control.ping(timeout=0.5) or []) < len(specs):
        if time.monotonic() > deadline:
            sys.exit(f"workers did not start; see {logs}")
    return workers


def _stop_workers(workers: list[Any]) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


def _reference(smtp_port: int, sink: Sink, count: int, *, reuse: bool = False) -> float:
    """Seconds to send ``count`` emails straight through the product's SMTP backend (Django's, with the
    envelope pipelined: ``apps.escalations.smtp``), one connection each (or one for all, ``reuse``, as the
    outbox's chunks send them)."""
    from django.core.mail import EmailMultiAlternatives, get_connection

    before = len(sink.accepted)
    started = time.perf_counter()
    shared = get_connection(BACKEND, host="127.0.0.1", port=smtp_port, timeout=10)
    if reuse:
        shared.open()
    for i in range(count):
        connection = shared
        if not reuse:
            connection = get_connection(BACKEND, host="127.0.0.1", port=smtp_port, timeout=10)
        message = EmailMultiAlternatives(
            subject=f"reference {i}", body="text", to=[f"ref{i}@fulcrum.bench"], connection=connection
        )
        message.attach_alternative("<p>html</p>", "text/html")
        message.send()
    shared.close()
    elapsed = time.perf_counter() - started
    while len(sink.accepted) < before + count:
        time.sleep(0.05)
    return elapsed


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process: its parent, its name and the CPU seconds (user + system) it used so far."""
    procs: dict[int, tuple[int, str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    head, tail = stat.read().rsplit(")", 1)
            except OSError:
                continue
            fields = tail.split()
            name = head.split("(", 1)[1]
            procs[int(entry)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick)
    return procs


def _tree(roots: list[int], procs: dict[int, tuple[int, str, float]]) -> set[int]:
    tree = set(roots)
    grew = True
    while grew:
        more = {pid for pid, (ppid, *_) in procs.items() if ppid in tree and pid not in tree}
        tree |= more
        grew = bool(more)
    return tree & set(procs)


def _tree_cpu(roots: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes ``roots`` and all their descendants."""
    procs = _processes()
    return sum(procs[pid][2] for pid in _tree(roots, procs))


class _Watch:
    """This process's side of ``--timeline``: when each part of the burst was handed to workers (the
    outbox's ``deliveries_dispatch``, called after its transaction commits) and when each task was
    published to the broker."""

    def __init__(self) -> None:
        from celery.signals import after_task_publish

        from apps.escalations import delivery, noise

        self.dispatched: dict[int, float] = {}  # row → when the dispatch that carried it started
        self.published: dict[str, float] = {}  # task id → when it was published
        self.modules = (delivery, noise)
        self.originals = [module.deliveries_dispatch for module in self.modules]
        self.signal = after_task_publish

        for module, original in zip(self.modules, self.originals, strict=True):
            setattr(module, "deliveries_dispatch", self._wrap(original))  # noqa: B010 - typed as a method, replaced here
        after_task_publish.connect(self._published, weak=False)

    def _wrap(self, original: Any) -> Any:
        def dispatch(ids: list[int]) -> None:
            at = time.time()
            for pk in ids:
                self.dispatched.setdefault(pk, at)
            original(ids)

        return dispatch

    def _published(self, headers: dict | None = None, **_: Any) -> None:
        if headers and "id" in headers:
            self.published[headers["id"]] = time.time()

    def close(self) -> None:
        self.signal.disconnect(self._published)
        for module, original in zip(self.modules, self.originals, strict=True):
            setattr(module, "deliveries_dispatch", original)  # noqa: B010 - typed as a method, replaced here


_STAGES = [
    ("committed (dispatch called)", "commit"),
    ("task published", "published"),
    ("task picked up", "pickup"),
    ("rows claimed and fetched", "claimed"),
    ("its turn in the chunk (render starts)", "render"),
    ("SMTP transaction starts", "send"),
    ("SMTP sent (reply read)", "sent"),
    ("accepted by the sink (its stamp)", "accepted"),
    ("recorded delivered", "recorded"),
]


def _timeline(
    rows: list[Any],
    opened: dict[int, dt.datetime],
    by_message: dict[tuple[str, str], list[float]],
    watch: _Watch,
    folder: Path,
) -> None:
    """Per email, each stage's time from the match; and each step's own length (stage − stage before)."""
    import json

    from apps.escalations.actions.email import message_id

    probe: dict[int, dict[str, Any]] = {}
    for path in folder.glob("*.jsonl"):
        for text in path.read_text().splitlines():
            record = json.loads(text)
            probe.setdefault(record.pop("pk"), {}).update(record)
    offsets: dict[str, list[float]] = {key: [] for _, key in _STAGES}
    steps: dict[str, list[float]] = {key: [] for _, key in _STAGES}
    render, connect, notes_pickup = [], [], []
    for d in rows:
        start = opened[d.escalation_id].timestamp()
        stamps = dict(probe.get(d.pk, {}))
        if not d.action.startswith("email_"):
            if "pickup" in stamps:
                notes_pickup.append(stamps["pickup"] - start)
            continue
        stamps["commit"] = watch.dispatched.get(d.pk)
        stamps["published"] = watch.published.get(stamps.get("task", ""))
        accepted = by_message.get((message_id(d), d.target))
        stamps["accepted"] = min(accepted) if accepted else None
        before = start
        for _, key in _STAGES:
            at = stamps.get(key)
            if at is None:
                continue
            offsets[key].append(at - start)
            if key != "accepted":  # the sink's stamp falls inside the SMTP transaction
                steps[key].append(at - before)
                before = at
        if "send" in stamps and "render" in stamps:
            render.append(
                stamps["send"] - stamps["render"] - (stamps.get("opened", 0) - stamps.get("open", 0))
            )
        if "opened" in stamps:
            connect.append(stamps["opened"] - stamps["open"])

    def line(values: list[float]) -> str:
        if not values:
            return "-"
        return (
            f"p50 {statistics.median(values) * 1000:7.0f} p95 {_percentile(values, 0.95) * 1000:7.0f} "
            f"max {max(values) * 1000:7.0f}"
        )

    print(f"timeline (ms; {len(probe)} rows stamped by the workers' probe), from the match = opened_at:")
    print(f"  {'stage':40} {'time since the match':34}   step's own length (since the stage above)")
    for label, key in _STAGES:
        print(f"  {label:40} {line(offsets[key]):34}   {line(steps[key]) if key != 'accepted' else ''}")
    print(f"  per email: render {line(render)}; SMTP connect ({len(connect)} opened) {line(connect)}")
    print(f"  vendor notes: picked up {line(notes_pickup)} after the match")


def _cpu_report(
    before: dict[int, tuple[int, str, float]],
    after: dict[int, tuple[int, str, float]],
    workers: dict[str, list[int]],
    sink_pid: int,
    wall: float,
) -> None:
    """CPU seconds each process used between the two snapshots, by role."""

    def used(pid: int) -> float:
        return after[pid][2] - (before[pid][2] if pid in before else 0.0)

    print(f"CPU per process over those {wall:.2f} s (2 cores give {2 * wall:.2f} s):")
    seen: set[int] = set()
    for role, roots in workers.items():
        for root in roots:
            tree = _tree([root], after)
            seen |= tree
            parts = ", ".join(
                f"{'main' if pid == root else 'pool'} {pid} {used(pid):.2f}" for pid in sorted(tree)
            )
            print(f"  {role} worker: {parts}")
    mine = os.getpid()
    for label, pid in (("sink", sink_pid), ("this process (evaluation, simulator, polling)", mine)):
        if pid in after:
            seen.add(pid)
            print(f"  {label}: {used(pid):.2f}")
    postgres = [pid for pid, (_, name, _) in after.items() if name == "postgres" and pid not in seen]
    seen |= set(postgres)
    print(f"  PostgreSQL server, every session (other runs' too): {sum(used(p) for p in postgres):.2f}")
    others = sorted(((used(pid), after[pid][1]) for pid in after if pid not in seen), reverse=True)
    print(
        f"  everything else on the machine: {sum(c for c, _ in others):.2f} ("
        + ", ".join(f"{name} {cpu:.2f}" for cpu, name in others[:4] if cpu >= 0.01)
        + ")"
    )


def _tasks_report(app: Any) -> None:
    """How many tasks of each kind every worker ran (Celery's ``inspect().stats()``): a deferred or split
    chunk shows as more tasks than chunks."""
    stats = app.control.inspect(timeout=2).stats() or {}
    for name, stat in sorted(stats.items()):
        totals = ", ".join(
            f"{task.rsplit('.', 1)[-1]} {n}" for task, n in sorted(stat.get("total", {}).items())
        )
        print(f"  tasks run by {name.split('@')[0]}: {totals or 'none'}")


def _burst(
    ids: list[int],
    args: Any,
    sink: Sink,
    simulator: Any,
    label: str,
    workers: dict[str, list[int]],
    timeline: Path | None = None,
) -> dict[str, float]:
    """Fire one burst (or paced run) of ``ids`` and wait for every outbox row; print and return figures.
    ``workers``: the pids of the email and the writeback worker processes, whose CPU is reported.
    ``timeline``: where the workers' probe writes its stamps (``--timeline``)."""
    from django.db.models import Count, Max

    from apps.escalations.actions.email import message_id
    from apps.escalations.models import Delivery, Escalation
    from apps.orchestration.pipeline import evaluate_subjects

    # Outbox ids come from one sequence: this burst's rows are those above the last one before it. (A list
    # of the earlier rows' ids, polled five times a second, cost this process more CPU with every burst.)
    last_before = Delivery.objects.aggregate(last=Max("pk"))["last"] or 0
    notes_before = len(simulator.notes)
    cpu_before = {name: _tree_cpu(pids) for name, pids in workers.items()}
    own_cpu_before = time.process_time()
    watch = _Watch() if timeline is not None else None
    procs_before = _processes()
    procs_emails = procs_before
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
    expected = len(ids) * len(ACTIONS)
    mine = Delivery.objects.filter(pk__gt=last_before)
    deadline = time.monotonic() + args.timeout
    emails_done_at = None
    cpu_emails: dict[str, float] = {}
    own_cpu_emails = 0.0
    while mine.filter(state=Delivery.State.DELIVERED).count() < expected:
        if (
            emails_done_at is None
            and not mine.filter(action__startswith="email_").exclude(state=Delivery.State.DELIVERED).exists()
        ):
            emails_done_at = time.time()
            cpu_emails = {name: _tree_cpu(pids) - cpu_before[name] for name, pids in workers.items()}
            own_cpu_emails = time.process_time() - own_cpu_before
            procs_emails = _processes()
        if time.monotonic() > deadline:
            states = {
                (action, state): n
                for action, state, n in mine.values_list("action", "state").annotate(n=Count("pk"))
            }
            print(f"{label}: not all delivered after {args.timeout:g} s: {states}")
            break
        time.sleep(0.2)
    done_at = time.time()
    cpu_all = {name: _tree_cpu(pids) - cpu_before[name] for name, pids in workers.items()}
    own_cpu_all = time.process_time() - own_cpu_before
    time.sleep(1)  # anything arriving twice would arrive now
    if watch is not None:
        watch.close()
    rows = list(mine)
    opened = dict(
        Escalation.objects.filter(pk__in={d.escalation_id for d in rows}).values_list("pk", "opened_at")
    )
    by_message = sink.by_message()
    email_latency, note_latency, missing, twice, email_stamps = [], [], 0, 0, []
    for d in rows:
        if d.action.startswith("email_"):
            stamps = by_message.get((message_id(d), d.target), [])
            missing += not stamps
            twice += len(stamps) > 1
            if stamps:
                email_latency.append(min(stamps) - opened[d.escalation_id].timestamp())
                email_stamps.append(min(stamps))
        elif d.action.startswith("note_") and d.delivered_at:
            note_latency.append((d.delivered_at - opened[d.escalation_id]).total_seconds())
    print(f"--- {label}")
    print(f"fired in {fired - started:.2f} s ({len(ids)} escalations opened and committed)")
    if emails_done_at is not None:
        print(
            f"CPU until the emails were delivered ({emails_done_at - started:.2f} s wall): "
            + ", ".join(f"{name} workers {cpu:.2f} s" for name, cpu in cpu_emails.items())
            + f", this process (evaluation, simulator, polling) {own_cpu_emails:.2f} s"
        )
    print(
        f"CPU until every row was delivered ({done_at - started:.2f} s wall): "
        + ", ".join(f"{name} workers {cpu:.2f} s" for name, cpu in cpu_all.items())
        + f", this process {own_cpu_all:.2f} s"
    )
    email_span = max(email_stamps) - fired if email_stamps else float("nan")
    print(
        f"emails: all {len(email_latency)} accepted {email_span:.2f} s after the burst's commit "
        f"({len(email_latency) / email_span:.0f} emails/s)"
    )
    for name, values in (
        ("match → email accepted by SMTP", email_latency),
        ("match → vendor note delivered", note_latency),
    ):
        if values:
            print(
                f"{name}: n={len(values)} p50 {statistics.median(values):.3f} s, "
                f"p95 {_percentile(values, 0.95):.3f} s, max {max(values):.3f} s"
            )
    if watch is not None and timeline is not None:
        _timeline(rows, opened, by_message, watch, timeline)
        if emails_done_at is not None:
            _cpu_report(procs_before, procs_emails, workers, sink.pid, emails_done_at - started)
    p95 = _percentile(email_latency, 0.95) if email_latency else float("inf")
    print(f"target email p95 < 2 s: {'met' if p95 < 2 else 'MISSED'} ({p95 / 2:.2f}× the target)")
    print(
        f"emails: {missing} missing, {twice} twice; upstream notes: {len(simulator.notes) - notes_before} "
        f"(expected {2 * len(ids)}); attempts: {sum(d.attempts for d in rows)} for {len(rows)} rows"
    )
    return {"p95": p95, "email_span": email_span, "emails": float(len(email_latency))}


def compare_report(results: list[tuple[int, dict[str, float]]]) -> str:
    """The line comparing ``--compare``'s sides: (email worker processes, a burst's figures) in the order
    run; each side's p95 and email span are the means of its bursts, and it is faster when its mean p95 is
    lower."""
    sides: dict[int, list[dict[str, float]]] = {}
    for workers, figures in results:
        sides.setdefault(workers, []).append(figures)
    (w1, one), (w2, two) = sorted(sides.items())

    def mean(bursts: list[dict[str, float]], key: str) -> float:
        return statistics.fmean(b[key] for b in bursts)

    def each(bursts: list[dict[str, float]]) -> str:
        return ", ".join(f"{b['p95']:.3f}" for b in bursts)

    p1, p2 = mean(one, "p95"), mean(two, "p95")
    s1, s2 = mean(one, "email_span"), mean(two, "email_span")
    order = "".join("AB"[workers != w1] for workers, _ in results)
    return (
        f"{w2} vs {w1} email worker processes ({order}, means of {len(two)} and {len(one)} bursts): "
        f"p95 {p2:.3f} s vs {p1:.3f} s ({p2 / p1:.2f}×; bursts {each(two)} vs {each(one)}), emails span "
        f"{s2:.2f} s vs {s1:.2f} s ({s2 / s1:.2f}×): {'faster' if p2 < p1 else 'NOT faster'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="escalations to fire")
    parser.add_argument("--rate", type=float, default=0.0, help="escalations per second; 0 = one burst")
    parser.add_argument("--workers", type=int, default=1, help="email (delivery) worker processes")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="pool size per email worker process; 4, the Procfile's WORKER_CONCURRENCY",
    )
    parser.add_argument(
        "--writeback-concurrency",
        type=int,
        default=2,
        help="pool size per writeback process; 2, the Procfile's WRITEBACK_CONCURRENCY",
    )
    parser.add_argument("--writeback-workers", type=int, default=1, help="processes on the writeback queue")
    parser.add_argument(
        "--writeback-nice",
        type=int,
        default=10,
        help="CPU priority (nice) of the writeback processes; 10, the Procfile's WRITEBACK_NICE",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run four bursts, --workers and twice as many email workers in ABBA order, and compare",
    )
    parser.add_argument("--scale", type=float, default=0.25, help="simulator size (raised to fit -n)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run")
    parser.add_argument(
        "--sink-in-process",
        action="store_true",
        help="serve the SMTP sink from a thread of this process (as before), not a process of its own",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="stamp each stage of every email in the workers (bench.escalate_probe) and print percentiles "
        "per stage and the CPU of each process",
    )
    parser.add_argument("--database", default=DB_NAME, help="database to create afresh (dropped first)")
    parser.add_argument("--broker", default=BROKER, help="a Redis database no other run uses")
    args = parser.parse_args()

    os.environ["CELERY_BROKER_URL"] = args.broker
    sys.path.insert(0, str(ROOT))
    from bench.common import fresh_django_database

    load_before = os.getloadavg()
    fresh_django_database(args.database)
    from django.conf import settings
    from django.db import connection

    from apps.simulator import SimulatorServer, generate_company
    from config.celery import app
    from config.embedded_servers import free_port

    # Noise controls would defer or cap 2·N emails to one inbox; this measures the outbox, not them.
    settings.FULCRUM.update({"QUIET_HOURS": "", "RECIPIENT_HOURLY_CAP": 0, "EXECUTIVE_DIGEST": False})

    # ABBA: each side has an early and a late turn (a later burst finds more rows and dead tuples).
    counts = (
        [args.workers, 2 * args.workers, 2 * args.workers, args.workers] if args.compare else [args.workers]
    )
    runs = len(counts)
    scale = args.scale
    company = generate_company(seed=42, scale=scale)
    while min(len(company.hs_companies), len(company.qbo_customers)) < runs * args.n:
        scale *= 2
        company = generate_company(seed=42, scale=scale)
    sink = Sink()
    smtp_port = free_port()
    sink.start(smtp_port, own_process=not args.sink_in_process)
    simulator = SimulatorServer(company).start()
    workers: list[Any] = []
    results = []
    try:
        ids = _plant(simulator, runs * args.n)
        app.control.purge()
        db_url = os.environ["DATABASE_URL"]
        logs = ROOT / ".data" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        reference = _reference(smtp_port, sink, 2 * args.n)
        print(
            f"reference: {2 * args.n} emails straight through the SMTP backend from one process in "
            f"{reference:.2f} s ({2 * args.n / reference:.0f} emails/s); simulator scale {scale:g}"
        )
        reused = _reference(smtp_port, sink, 2 * args.n, reuse=True)
        print(
            f"reference over one connection: {reused:.2f} s ({2 * args.n / reused:.0f} emails/s: one "
            f"client process as fast as the sink takes them)"
        )
        for run, email_workers in enumerate(counts):
            specs = [
                (f"mail{i}", args.concurrency, "celery,sync,evaluation,delivery", 0)
                for i in range(email_workers)
            ]
            specs += [
                (f"writeback{i}", args.writeback_concurrency, "writeback", args.writeback_nice)
                for i in range(args.writeback_workers)
            ]
            folder = None
            if args.timeline:
                import tempfile

                folder = Path(tempfile.mkdtemp(prefix="bench-escalate-timeline-"))
            workers = _start_workers(specs, smtp_port, db_url, logs, args.broker, folder)
            named = [(name, w.pid) for w, (name, *_) in zip(workers, specs, strict=True)]
            pids = {
                "email": [pid for name, pid in named if name.startswith("mail")],
                "writeback": [pid for name, pid in named if name.startswith("writeback")],
            }
            label = (
                f"{args.n} escalations, {'burst' if not args.rate else f'{args.rate:g}/s'}; {email_workers} "
                f"email worker process(es) × {args.concurrency} + {args.writeback_workers} "
                f"writeback × {args.writeback_concurrency} (nice {args.writeback_nice}); "
                f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}"
            )
            figures = _burst(
                ids[run * args.n : (run + 1) * args.n], args, sink, simulator, label, pids, folder
            )
            # Divided by the path the outbox uses: a chunk's emails share one connection.
            same_path = reused * figures["emails"] / (2 * args.n)
            print(
                f"outbox emails vs reference over one connection: {figures['email_span']:.2f} s / "
                f"{same_path:.2f} s = {figures['email_span'] / same_path:.2f}×"
            )
            results.append((email_workers, figures))
            if args.timeline:
                _tasks_report(app)
            _stop_workers(workers)
            workers = []
        if args.compare:
            print(compare_report(results))
        print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    finally:
        _stop_workers(workers)
        simulator.stop()
        sink.stop()
        app.control.purge()
        connection.close()


if __name__ == "__main__":
    main()
