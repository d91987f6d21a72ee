"""Sync benchmark: a full pull of the simulated company over loopback, then a 1% incremental pull,
against the physical reference: a raw psycopg COPY of the same normalised rows into the same tables.

    python bench/sync.py [--scale 17] [--small-scale 4] [--port 8791] [--database fulcrum_bench_sync]

Uses a dedicated database (``--database``, default ``fulcrum_bench_sync``) on the server of DATABASE_URL
(dropped and migrated each run): give concurrent runs different names and ports. The simulator runs in
its own process so that it does not share the GIL with the sync. Prints records/s, peak RSS (this
process: the sync side), and the ratio to COPY. A report, not a test.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def _sync_all() -> tuple[float, int]:
    from apps.connectors.models import Connection
    from apps.connectors.services import sync_connection

    started = time.perf_counter()
    seen = 0
    for slug in ("crm", "accounting", "pm"):
        for run in sync_connection(connection=Connection.objects.get(slug=slug)):
            assert run.status == "succeeded", (slug, run.stream, run.status, run.error)
            seen += int(run.counts.get("seen", 0))
    return time.perf_counter() - started, seen


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
        raw.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
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


def run(scale: float, port: int, *, with_reference: bool, database: str = DB_NAME) -> dict[str, float]:
    from bench.common import fresh_django_database

    fresh_django_database(database)

    import apps.rules.evaluation.triggers as triggers  # no evaluation queued: this measures the sync alone

    triggers.on_entities_changed = lambda changes, trigger="sync": {}
    from apps.accounts.demo import demo_connections
    from apps.connectors.services import connection_import

    _reset_rate_budgets(port)
    sim = _start_simulator(scale, port)
    try:
        connection_import(data=demo_connections(f"http://127.0.0.1:{port}"), actor="system:bench")
        full_s, full_n = _sync_all()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        body = b'{"fraction": 0.01, "seed": 3}'
        req = urllib.request.Request(f"http://127.0.0.1:{port}/_sim/mutate", data=body, method="POST")
        urllib.request.urlopen(req, timeout=60)  # noqa: S310
        incr_s, incr_n = _sync_all()
        result = {
            "scale": scale,
            "full_s": full_s,
            "full_records": full_n,
            "full_rps": full_n / full_s,
            "incr_s": incr_s,
            "incr_records": incr_n,
            "peak_rss_mb": peak_mb,
        }
        if with_reference:
            copy_s, copy_n = _copy_reference()
            result.update(copy_s=copy_s, copy_rows=copy_n, copy_rps=copy_n / copy_s)
        return result
    finally:
        sim.terminate()
        sim.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=17.0)
    parser.add_argument("--small-scale", type=float, default=4.0)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--database", default=DB_NAME, help="the database to drop, create and fill")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(repr(run(args.scale, args.port, with_reference=args.reference, database=args.database)))
        return
    results = []
    for scale, reference in ((args.small_scale, []), (args.scale, ["--reference"])):
        # Each scale in a fresh process, so peak RSS is that scale's own.
        out = (
            subprocess.run(
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
                    *reference,
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        results.append(eval(out, {"__builtins__": {}}))  # noqa: S307 - our own child's repr of a dict
    small, big = results
    print(f"machine: {os.cpu_count()} cores; simulator in its own process over loopback")
    for r in results:
        print(
            f"scale {r['scale']:>4}: full sync {r['full_records']:>7,} records in {r['full_s']:6.1f} s = "
            f"{r['full_rps']:7,.0f} records/s; 1% incremental {r['incr_records']:>6,} records in "
            f"{r['incr_s']:5.2f} s; peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    print(
        f"COPY reference (scale {big['scale']}): {big['copy_rows']:,} rows in {big['copy_s']:.2f} s = "
        f"{big['copy_rps']:,.0f} rows/s; sync end to end is {big['copy_rps'] / big['full_rps']:.1f}x slower"
    )
    verdict = {True: "met", False: "MISSED"}
    print(
        f"targets: >= 10,000 records/s [{verdict[big['full_rps'] >= 10_000]}]; "
        f"incremental < 2 s [{verdict[big['incr_s'] < 2]}]; peak RSS < 300 MB and flat "
        f"[{verdict[big['peak_rss_mb'] < 300]}: {small['peak_rss_mb']:.0f} → {big['peak_rss_mb']:.0f} MB]"
    )


if __name__ == "__main__":
    main()
