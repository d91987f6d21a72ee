"""Sync benchmark, counted as users wait for it: a full pull of the simulated company over loopback with the
change marking on (``on_entities_changed``: the pending evaluations the sync writes for the rules), then a 1%
incremental pull (as the scheduled task runs it: the changes, then the reconciliation share as its own task,
timed apart), against the physical reference: a raw psycopg COPY of the same normalised rows into the
same tables. ``--peer dlt`` also loads Procore's change orders with dlt's ``rest_api`` source (the optional
extra ``[peers]``) from the same simulator in the same run.

    python bench/sync.py [--scale 17] [--small-scale 4] [--port 8791] [--database fulcrum_bench_sync]
                         [--peer dlt] [--no-marking] [--sequential] [--profile]

Each pass syncs the three connections as their scheduled tasks run: each in its own worker process, at
once (they share the schedule, and the Procfile's worker runs four tasks at a time). The processes are
forked from the bench's, warm as a worker's pool processes are, and a pass's time runs until the last of
them is done. ``--sequential``: one connection after the other in one process, as this bench ran before
session 17 (it summed the connections).

Uses a dedicated database (``--database``, default ``fulcrum_bench_sync``) on the server of DATABASE_URL
(dropped and migrated each run): give concurrent runs different names and ports. The simulator runs in
its own process so that it does not share the GIL with the sync. Prints records/s with the marking counted,
a line for the marking alone (summed over the connections), peak RSS (the largest of the processes that
synced), the ratio to COPY (and to dlt, which is compared with the change orders stream loading alone),
and the load average before and after. A report, not a test.

Between the full and the incremental pull the pending evaluations the full pull marked are deleted
(untimed): a running worker's flush evaluates and deletes them within the coalescing window, so the
incremental marks into the table as it usually is. The flush itself (rule evaluation) is not counted here:
that is ``bench/evaluate.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "fulcrum_bench_sync"
TABLES = [
    "entities_crmowner",
    "entities_client",
    "entities_sourceobject",
    "entities_financialline",
    "entities_project",
    "entities_vendor",
    "entities_milestone",
    "entities_changeorder",
    "entities_submittal",
]
# Targets (issue 20), on the 2-core machine with the change marking counted.
RPS_TARGET = 12_000
COPY_RATIO_TARGET = 3.0
DLT_RATIO_TARGET = 1.5
INCR_TARGET_S = 1.5
RSS_TARGET_MB = 250


def _start_simulator(scale: float, port: int) -> subprocess.Popen[bytes]:
    sim = subprocess.Popen(
        [sys.executable, "-m", "apps.simulator", "--port", str(port), "--scale", str(scale)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/health", timeout=1)
            return sim
        except OSError:
            time.sleep(0.5)
    sim.kill()
    raise SystemExit("simulator did not start")


SLUGS = ("crm", "accounting", "pm")


def _postgres_cpu() -> float:
    """CPU seconds used so far by this machine's PostgreSQL: its live processes' and, through the
    postmaster's count of its ended children, the sessions closed since (a connection's process ends with
    it; every session's, not only the bench's)."""
    from bench.common import process_cpu

    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text:
            total += process_cpu(int(stat.parent.name), reaped=True) or 0.0
    return total


def _own_cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the connections' processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _sync_one(slug: str, reads: str) -> tuple[int, int, dict[str, float]]:
    """One connection's streams, as its scheduled task runs them; (records seen, upstream calls, seconds per
    stream)."""
    from apps.connectors.models import Connection
    from apps.connectors.services import sync_connection

    seen = calls = 0
    streams: dict[str, float] = {}
    for run in sync_connection(connection=Connection.objects.get(slug=slug), reads=reads):
        assert run.status == "succeeded", (slug, run.stream, run.status, run.error)
        seen += int(run.counts.get("seen", 0))
        calls += int(run.counts.get("api_calls", 0))
        if run.finished_at:
            streams[f"{slug}.{run.stream}"] = (run.finished_at - run.started_at).total_seconds()
    return seen, calls, streams


class Pass:
    """One pass over the connections: wall seconds, records seen, upstream calls, seconds per stream, the
    marking's seconds and subjects, the ``--profile`` rows and the peak RSS of the processes that synced."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.seen = self.calls = self.marked = 0
        self.mark_s = 0.0
        self.streams: dict[str, float] = {}
        self.rows: dict[str, dict[str, float]] = {}
        self.peak_mb = 0.0
        self.cpu: dict[str, float] = {}  # CPU seconds in the pass: the syncing processes, simulator, server

    def add(self, part: dict[str, Any]) -> None:
        self.seen += part["seen"]
        self.calls += part["calls"]
        self.streams.update(part["streams"])
        self.mark_s += part["mark_s"]
        self.marked += part["marked"]
        self.rows.update(part["rows"])
        self.peak_mb = max(self.peak_mb, part["peak_mb"])


def _part(slugs: tuple[str, ...], reads: str, marks: Marking, box: Breakdown | None) -> dict[str, Any]:
    """Sync ``slugs`` one after the other in this process; what it did, as ``Pass.add`` takes it."""
    seen = calls = 0
    streams: dict[str, float] = {}
    for slug in slugs:
        n, c, s = _sync_one(slug, reads)
        seen, calls = seen + n, calls + c
        streams.update(s)
    mark_s, marked = marks.take()
    return {
        "seen": seen,
        "calls": calls,
        "streams": streams,
        "mark_s": mark_s,
        "marked": marked,
        "rows": box.take() if box else {},
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(slug: str, reads: str, marks: Marking, box: Breakdown | None, out: Any) -> None:
    try:
        out.send(_part((slug,), reads, marks, box))
    except BaseException as exc:  # reported to the parent, which fails the bench
        out.send({"error": f"{slug}: {type(exc).__name__}: {exc}"})
    finally:
        out.close()


def _sync_all(
    reads: str = "changes", *, marks: Marking, box: Breakdown | None, parallel: bool, sim_pid: int
) -> Pass:
    """Every connection's streams, as the scheduler runs them: each connection's scheduled task on its own
    (the demo's three share the schedule ``*/15 * * * *``, and the Procfile's worker runs four tasks at
    once, each in its own process), so ``parallel`` syncs each connection in a process of its own, forked
    from this one (warm, as a worker's pool process is) and times the pass until the last one is done;
    otherwise one after the other in this process (``--sequential``). The scheduled task reads the changes
    (``reads="changes"``) and queues the streams' reconciliation share as its own task
    (``reconcile_share_task``): that is ``_sync_all("share")``, timed apart. A first run reads everything
    either way. The pass's CPU is counted for the syncing processes, the simulator (``sim_pid``: the
    vendors' side, on the same cores) and PostgreSQL."""
    from bench.common import process_cpu

    own, sim, server = _own_cpu(), process_cpu(sim_pid) or 0.0, _postgres_cpu()
    result = _pass(reads, marks, box, parallel)
    result.cpu = {
        "sync": _own_cpu() - own,
        "simulator": (process_cpu(sim_pid) or 0.0) - sim,
        "PostgreSQL": _postgres_cpu() - server,
    }
    return result


def _pass(reads: str, marks: Marking, box: Breakdown | None, parallel: bool) -> Pass:
    import multiprocessing

    from django.db import connections

    result = Pass()
    if not parallel:
        started = time.perf_counter()
        result.add(_part(SLUGS, reads, marks, box))
        result.seconds = time.perf_counter() - started
        return result
    connections.close_all()  # each child opens its own
    context = multiprocessing.get_context("fork")
    children = []
    started = time.perf_counter()
    for slug in SLUGS:
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(slug, reads, marks, box, send), name=f"sync-{slug}")
        process.start()
        send.close()
        children.append((process, receive))
    parts = []
    for process, receive in children:
        parts.append(receive.recv())
        process.join()
    result.seconds = time.perf_counter() - started
    for part in parts:
        if "error" in part:
            raise SystemExit(f"a connection's sync failed: {part['error']}")
        result.add(part)
    return result


class Marking:
    """Times ``apps.rules.evaluation.triggers.on_entities_changed`` where the sync calls it (it imports
    the function at call time), and counts the subjects it marks. ``off``: a no-op (the old bench)."""

    def __init__(self, *, off: bool) -> None:
        import apps.rules.evaluation.triggers as triggers

        self.seconds = 0.0
        self.subjects = 0
        original = triggers.on_entities_changed

        def timed(
            changes: dict[str, set[int]], trigger: str = "sync", since: dt.datetime | None = None
        ) -> dict[str, int]:
            if off:
                return {}
            started = time.perf_counter()
            try:
                marked = original(changes, trigger, since)
            finally:
                self.seconds += time.perf_counter() - started
            self.subjects += sum(marked.values())
            return marked

        triggers.on_entities_changed = timed

    def take(self) -> tuple[float, int]:
        taken = self.seconds, self.subjects
        self.seconds, self.subjects = 0.0, 0
        return taken


class Breakdown:
    """Where each stream's time goes (``--profile``): waiting for the read-ahead's next page (and, summed over
    the readers, on the rate budget: the run's ``rate_limited_seconds``), storing pages
    (``_store_page``: upsert, quarantine, cursor), and per connection the linking and the marking after its
    streams; with this process's CPU and (``sim_pid``) the simulator's CPU per upstream call. Wraps the
    services' own names from the bench, as ``Marking`` does; nothing in the product changes."""

    def __init__(self, sim_pid: int | None) -> None:
        import apps.connectors.services as services

        self.sim_pid = sim_pid
        self.rows: dict[str, dict[str, float]] = {}
        self.current = ""
        original_store = services._store_page
        original_publish = services.entities_changed_publish
        prefetch = services.Prefetch
        box = self

        def timed(call: Any, row: str, clock: Any = time.perf_counter) -> Any:
            """``call``, adding the ``clock`` time it takes to ``row`` of the current stream."""

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = clock()
                try:
                    return call(*args, **kwargs)
                finally:
                    box._add(row, clock() - started)

            return wrapper

        store = timed(original_store, "store_s")
        publish = timed(original_publish, "link_and_mark_s")

        class TimedPrefetch(prefetch):  # type: ignore[misc, valid-type]
            def __next__(self) -> Any:
                started = time.perf_counter()
                try:
                    return super().__next__()
                finally:
                    box._add("wait_s", time.perf_counter() - started)

        original_stream = services._sync_stream

        def stream(connection: Any, stream_name: str, *args: Any, **kwargs: Any) -> Any:
            box.current = f"{connection.slug}.{stream_name}"
            started, cpu, sim = time.perf_counter(), time.process_time(), box.sim_cpu()
            try:
                run, changed = original_stream(connection, stream_name, *args, **kwargs)
            finally:
                box._add("stream_s", time.perf_counter() - started)
                box._add("cpu_s", time.process_time() - cpu)
                if box.sim_pid:
                    box._add("sim_cpu_s", box.sim_cpu() - sim)
            box._add("calls", float(run.counts.get("api_calls", 0)))
            box._add("rate_limited_s", float(run.counts.get("rate_limited_seconds", 0)))
            box._add("pages", float(run.counts.get("pages", 0)))
            box._add("records", float(run.counts.get("seen", 0)))
            box.current = f"{connection.slug}.(after)"
            return run, changed

        publish_timed = timed(publish, "cpu_s", time.process_time)

        services._store_page = store
        services.entities_changed_publish = publish_timed
        services.Prefetch = TimedPrefetch  # type: ignore[misc]
        services._sync_stream = stream

    def take(self) -> dict[str, dict[str, float]]:
        rows, self.rows = self.rows, {}
        return rows

    def _add(self, name: str, seconds: float) -> None:
        row = self.rows.setdefault(self.current, {})
        row[name] = row.get(name, 0.0) + seconds

    def sim_cpu(self) -> float:
        from bench.common import process_cpu

        return (process_cpu(self.sim_pid) or 0.0) if self.sim_pid else 0.0

    @staticmethod
    def lines(rows: dict[str, dict[str, float]]) -> list[str]:
        out = []
        for key, row in rows.items():
            parts = []
            for name in (
                "stream_s",
                "wait_s",
                "rate_limited_s",
                "store_s",
                "link_and_mark_s",
                "cpu_s",
                "sim_cpu_s",
            ):
                if name in row:
                    parts.append(f"{name.removesuffix('_s')} {row[name]:.2f} s")
            for name in ("calls", "pages", "records"):
                if row.get(name):
                    parts.append(f"{name} {row[name]:,.0f}")
            if row.get("calls") and row.get("sim_cpu_s"):
                parts.append(f"sim CPU/call {1000 * row['sim_cpu_s'] / row['calls']:.2f} ms")
            if row.get("calls") and row.get("stream_s"):
                parts.append(f"calls/s {row['calls'] / row['stream_s']:,.0f}")
            out.append(f"    {key:<22} " + "; ".join(parts))
        return out


def _pending_clear() -> int:
    """What a worker's flush does within the coalescing window: evaluate the marked subjects, deleting the
    marks. Only the delete here (untimed); returns the marks there were."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM rules_pendingevaluation")
        return int(cursor.rowcount)


def _change_orders_alone() -> float:
    """Seconds of Procore's change orders stream loading every change order afresh, alone in this process
    (the rows deleted first, untimed): the first load dlt's is compared with."""
    from django.db import connection

    from apps.connectors.models import Connection
    from apps.connectors.services import sync_connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM entities_changeorder")
    pm = Connection.objects.get(slug="pm")
    (run,) = sync_connection(connection=pm, full=True, streams=["change_orders"])
    assert run.status == "succeeded" and run.finished_at, (run.status, run.error)
    return (run.finished_at - run.started_at).total_seconds()


def _copy_reference() -> tuple[float, int]:
    """Dump the synced rows, empty the tables, and time COPY of the same rows back in."""
    from django.db import connection

    dumps: dict[str, tuple[list[str], bytes]] = {}
    with connection.cursor() as cursor:
        raw = cursor.connection
        for table in TABLES:
            columns = [c.name for c in raw.execute(f"SELECT * FROM {table} LIMIT 0").description]
            buffer = io.BytesIO()
            with raw.cursor().copy(f"COPY {table} TO STDOUT") as copy:
                for chunk in copy:
                    buffer.write(chunk)
            dumps[table] = (columns, buffer.getvalue())
        # CASCADE reaches the append-only tables (empty here), whose statement triggers refuse TRUNCATE
        # outside test_* databases; replica mode skips triggers for this statement only.
        raw.execute("SET session_replication_role = replica")
        raw.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
        raw.execute("RESET session_replication_role")
        rows = 0
        started = time.perf_counter()
        with raw.transaction():
            for table, (columns, data) in dumps.items():
                with raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    copy.write(data)
                rows += data.count(b"\n")
        return time.perf_counter() - started, rows


def _reset_rate_budgets(port: int) -> None:
    """Forget earlier runs' calls against this simulator port: the shared per-tenant budgets live in Redis
    for up to ten minutes (Procore's window), and back-to-back bench runs would otherwise wait them out."""
    from apps.connectors.ratelimit import redis_client, redis_url

    client = redis_client(redis_url())
    for key in client.scan_iter(match=f"fulcrum:rate:*127.0.0.1:{port}*"):
        client.delete(key)


def run(
    scale: float,
    port: int,
    *,
    with_reference: bool,
    database: str = DB_NAME,
    peer: str = "",
    marking: bool = True,
    profile: bool = False,
    parallel: bool = True,
) -> dict[str, Any]:
    from bench.common import fresh_django_database

    fresh_django_database(database)
    marks = Marking(off=not marking)
    from apps.accounts.demo import demo_connections
    from apps.connectors.services import connection_import

    _reset_rate_budgets(port)
    # What a worker does when it starts, before its pool forks: import the apps' task modules (Celery's
    # autodiscovery, with the Django fixup's checks). Without it, a sync's first mark imports them itself
    # (``triggers.task``), 0.19-0.28 s of every forked process's first pass (measured).
    from celery import current_app

    current_app.loader.import_default_modules()
    sim = _start_simulator(scale, port)
    try:
        connection_import(data=demo_connections(f"http://127.0.0.1:{port}"), actor="system:bench")
        # In parallel the simulator serves every connection at once: its CPU is not one stream's.
        box = Breakdown(None if parallel else sim.pid) if profile else None
        full = _sync_all(marks=marks, box=box, parallel=parallel, sim_pid=sim.pid)
        pending = _pending_clear()
        body = b'{"fraction": 0.01, "seed": 3}'
        req = urllib.request.Request(f"http://127.0.0.1:{port}/_sim/mutate", data=body, method="POST")
        urllib.request.urlopen(req, timeout=60)  # noqa: S310
        incr = _sync_all(marks=marks, box=box, parallel=parallel, sim_pid=sim.pid)
        # The reconciliation share the incremental queues (Procore's rotating projects), timed apart.
        share = _sync_all("share", marks=marks, box=box, parallel=parallel, sim_pid=sim.pid)
        result: dict[str, Any] = {
            "scale": scale,
            "marking": marking,
            "parallel": parallel,
            "full_s": full.seconds,
            "full_records": full.seen,
            "full_rps": full.seen / full.seconds,
            "full_mark_s": full.mark_s,
            "full_marked": full.marked,
            "pending_rows": pending,
            "full_calls": full.calls,
            "incr_s": incr.seconds,
            "incr_records": incr.seen,
            "incr_calls": incr.calls,
            "incr_mark_s": incr.mark_s,
            "incr_marked": incr.marked,
            "share_s": share.seconds,
            "share_records": share.seen,
            "share_calls": share.calls,
            "share_mark_s": share.mark_s,
            "peak_rss_mb": full.peak_mb,
            "co_stream_s": full.streams.get("pm.change_orders", 0.0),
            "cpu_full": full.cpu,
            "cpu_incr": incr.cpu,
            "breakdown_full": full.rows,
            "breakdown_incr": incr.rows,
            "breakdown_share": share.rows,
        }
        if peer == "dlt" and parallel:
            # dlt loads alone: so does the change orders stream it is compared with, not beside the others.
            result["co_stream_s"] = _change_orders_alone()
        if with_reference:
            copy_s, copy_n = _copy_reference()
            result.update(copy_s=copy_s, copy_rows=copy_n, copy_rps=copy_n / copy_s)
        if peer == "dlt":
            result.update(_dlt_change_orders(port, database))
        return result
    finally:
        sim.terminate()
        sim.wait(timeout=20)


def _dlt_change_orders(port: int, database: str) -> dict[str, Any]:
    """dlt's ``rest_api`` source over the same simulator: Procore's projects (compact list, not loaded) and
    each project's change order packages (``include_from_parent``: the project id), merged on ``id`` into
    PostgreSQL (a schema of the bench database). Procore pages with ``page``/``per_page`` and a ``Link``
    header (``rel="next"``), which dlt's ``header_link`` paginator follows. dlt's defaults otherwise
    (sequential child requests, ``insert_values`` loader files)."""
    from urllib.parse import urlsplit, urlunsplit

    import dlt
    from dlt.sources.rest_api import rest_api_source

    parts = urlsplit(os.environ["DATABASE_URL"])
    # dlt's PostgreSQL credentials require a password; the bench server trusts loopback and ignores it.
    netloc = parts.netloc if ":" in parts.netloc.split("@")[0] else parts.netloc.replace("@", ":bench@", 1)
    credentials = urlunsplit(parts._replace(scheme="postgresql", netloc=netloc, path=f"/{database}"))
    config: Any = {
        "client": {
            "base_url": f"http://127.0.0.1:{port}/",
            "auth": {"type": "bearer", "token": "sim-procore-token"},
            "headers": {"Procore-Company-Id": "4242"},
            "paginator": {"type": "header_link"},
        },
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
        "resources": [
            {
                "name": "projects",
                "selected": False,
                "endpoint": {
                    "path": "rest/v1.0/projects",
                    "params": {
                        "company_id": 4242,
                        "filters[by_status]": "All",
                        "serializer_view": "compact",
                        "per_page": 1000,
                    },
                },
            },
            {
                "name": "change_orders",
                "include_from_parent": ["id"],
                "endpoint": {
                    "path": "rest/v1.0/change_order_packages",
                    "params": {
                        "project_id": "{resources.projects.id}",
                        "per_page": 1000,
                    },
                },
            },
        ],
    }
    with tempfile.TemporaryDirectory() as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name="bench_procore",
            pipelines_dir=pipelines_dir,
            destination=dlt.destinations.postgres(credentials=credentials),
            dataset_name="dlt_procore",
        )
        started = time.perf_counter()
        pipeline.run(rest_api_source(config))
        first_s = time.perf_counter() - started
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM dlt_procore.change_orders")
            rows = cursor.fetchone()[0]
            cursor.execute("DROP SCHEMA dlt_procore CASCADE")
    return {"dlt_s": first_s, "dlt_rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=17.0)
    parser.add_argument("--small-scale", type=float, default=4.0)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--database", default=DB_NAME, help="the database to drop, create and fill")
    parser.add_argument("--peer", choices=["dlt"], help="also load the change orders with this peer")
    parser.add_argument(
        "--no-marking", action="store_true", help="replace the change marking with a no-op (the old bench)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print where each stream's time goes: waiting for pages, storing them, linking and marking, "
        "this process's CPU, the simulator's CPU per call",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="sync the connections one after the other in one process (the bench before session 17), "
        "instead of each in its own process at once, as the scheduled tasks run",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run(
            args.scale,
            args.port,
            with_reference=args.reference,
            database=args.database,
            peer=args.peer or "",
            marking=not args.no_marking,
            profile=args.profile,
            parallel=not args.sequential,
        )
        print(repr(result))
        return
    from bench.common import say_load, verdict

    say_load("before")
    results = []
    for scale, extra in (
        (args.small_scale, []),
        (args.scale, ["--reference", *(["--peer", args.peer] if args.peer else [])]),
    ):
        # Each scale in a fresh process, so peak RSS is that scale's own.
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--scale",
                str(scale),
                "--port",
                str(args.port),
                "--database",
                args.database,
                *(["--no-marking"] if args.no_marking else []),
                *(["--profile"] if args.profile else []),
                *(["--sequential"] if args.sequential else []),
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if child.returncode:
            sys.stderr.write(child.stdout[-4000:] + child.stderr[-4000:])
            raise SystemExit(f"scale {scale}: the child failed ({child.returncode})")
        out = child.stdout.strip().splitlines()[-1]
        results.append(eval(out, {"__builtins__": {}}))  # noqa: S307 - our own child's repr of a dict
    small, big = results
    marking = "ON (counted)" if big["marking"] else "OFF (no-op, not what users wait for)"
    how = (
        "one after the other in one process (--sequential)"
        if args.sequential
        else "each in its own process at once, as their scheduled tasks run"
    )
    print(
        f"machine: {os.cpu_count()} cores; simulator in its own process over loopback; marking {marking}; "
        f"connections synced {how}"
    )
    for r in results:
        print(
            f"scale {r['scale']:>4}: full sync {r['full_records']:>7,} records in {r['full_s']:6.1f} s = "
            f"{r['full_rps']:7,.0f} records/s ({r['full_calls']:,} upstream calls); 1% incremental "
            f"{r['incr_records']:>6,} records in {r['incr_s']:5.2f} s ({r['incr_calls']:,} calls); "
            f"peak RSS {r['peak_rss_mb']:.0f} MB"
        )
        if r["marking"] and r["parallel"]:
            print(
                f"    marking alone, summed over the connections' processes (which ran at once): full "
                f"{r['full_mark_s']:5.2f} s ({r['full_marked']:,} subjects marked, {r['pending_rows']:,} "
                f"pending rows), incremental {r['incr_mark_s']:5.2f} s ({r['incr_marked']:,} subjects)"
            )
        elif r["marking"]:
            print(
                f"    marking alone: full {r['full_mark_s']:5.2f} s ({r['full_marked']:,} subjects marked, "
                f"{r['pending_rows']:,} pending rows), incremental {r['incr_mark_s']:5.2f} s "
                f"({r['incr_marked']:,} subjects); the sync without it: full "
                f"{r['full_records'] / (r['full_s'] - r['full_mark_s']):7,.0f} records/s, incremental "
                f"{r['incr_s'] - r['incr_mark_s']:5.2f} s"
            )
        cores = os.cpu_count() or 1
        for key, label in (("full", "full pass"), ("incr", "incremental")):
            cpu = r[f"cpu_{key}"]
            print(
                f"    CPU in the {label}: "
                + ", ".join(f"{name} {value:.1f} s" for name, value in cpu.items())
                + f"; {sum(cpu.values()):.1f} s of the {cores} cores' {cores * r[f'{key}_s']:.1f} s"
            )
        print(
            f"    then the incremental's reconciliation share (its own task, after it; not in the figure "
            f"above): {r['share_records']:,} records in {r['share_s']:.2f} s ({r['share_calls']:,} calls, "
            f"marking {r['share_mark_s']:.2f} s)"
        )
        for label in ("full", "incr", "share"):
            if r.get(f"breakdown_{label}"):
                print(
                    f"  breakdown, {label} (wait: for the read-ahead's next page; rate_limited: "
                    "the readers' waits on the rate budget, summed; store: _store_page):"
                )
                print("\n".join(Breakdown.lines(r[f"breakdown_{label}"])))
    copy_ratio = big["copy_rps"] / big["full_rps"]
    print(
        f"reference COPY (scale {big['scale']}): {big['copy_rows']:,} rows in {big['copy_s']:.2f} s = "
        f"{big['copy_rps']:,.0f} rows/s; ratio: sync end to end is {copy_ratio:.2f}x COPY's time"
    )
    checks = [
        f">= {RPS_TARGET:,} records/s [{verdict(big['full_rps'] >= RPS_TARGET)}: {big['full_rps']:,.0f}]",
        f"<= {COPY_RATIO_TARGET:.0f}x COPY [{verdict(copy_ratio <= COPY_RATIO_TARGET)}: {copy_ratio:.2f}x]",
        f"incremental < {INCR_TARGET_S} s [{verdict(big['incr_s'] < INCR_TARGET_S)}: {big['incr_s']:.2f} s]",
        f"peak RSS < {RSS_TARGET_MB} MB and flat [{verdict(big['peak_rss_mb'] < RSS_TARGET_MB)}: "
        f"{small['peak_rss_mb']:.0f} → {big['peak_rss_mb']:.0f} MB]",
    ]
    if "dlt_s" in big:
        ratio = big["dlt_s"] / big["co_stream_s"]
        print(
            f"reference dlt {_dlt_version()} rest_api, Procore change orders, first load, "
            f"scale {big['scale']}: "
            f"{big['dlt_rows']:,} rows in {big['dlt_s']:.1f} s; Fulcrum's change_orders stream "
            f"{'in the full sync' if args.sequential else 'alone, every row afresh'} "
            f"{big['co_stream_s']:.1f} s; ratio: dlt takes {ratio:.2f}x Fulcrum's time"
        )
        checks.append(f">= {DLT_RATIO_TARGET}x dlt [{verdict(ratio >= DLT_RATIO_TARGET)}: {ratio:.2f}x]")
    print("targets: " + "; ".join(checks))
    say_load("after")


def _dlt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dlt")
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
