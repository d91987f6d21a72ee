"""Procore alone: a full sync then a 1% incremental one against the simulator, with time and API calls per
stream (bench/sync.py times the three systems together).

    python bench/procore_sync.py [--scale 17] [--port 8795] [--database fulcrum_procore_bench]

The database is dropped, created and migrated on the server of DATABASE_URL. The change marking runs as
in the product (the subjects the sync changed are queued for evaluation), inside the timing. Reference,
measured in the same run: a raw COPY of the rows synced back into the emptied tables (``bench/sync.py``'s),
and the full sync's time as a ratio to it. Prints the load average before and after. A report, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=17.0)
    parser.add_argument("--port", type=int, default=8795)
    parser.add_argument("--database", default="fulcrum_procore_bench")
    parser.add_argument("--concurrency", type=int, default=0, help="options.concurrency (0: the default)")
    args = parser.parse_args()
    from bench.common import fresh_django_database, say_load

    say_load("before")
    fresh_django_database(args.database)
    from apps.accounts.demo import demo_connections
    from apps.connectors.models import Connection
    from apps.connectors.services import connection_import, sync_connection
    from bench.sync import _copy_reference, _reset_rate_budgets, _start_simulator

    _reset_rate_budgets(args.port)
    t0 = time.perf_counter()
    sim = _start_simulator(args.scale, args.port)
    print(f"simulator up in {time.perf_counter() - t0:.1f} s")
    try:
        connection_import(data=demo_connections(f"http://127.0.0.1:{args.port}"), actor="system:bench")
        pm = Connection.objects.get(slug="pm")
        if args.concurrency:
            pm.options = {**pm.options, "concurrency": args.concurrency}
            pm.save(update_fields=["options"])
        seconds: dict[str, float] = {}
        for label in ("full", "incremental"):
            if label == "incremental":
                body = b'{"fraction": 0.01, "seed": 3}'
                req = urllib.request.Request(
                    f"http://127.0.0.1:{args.port}/_sim/mutate", data=body, method="POST"
                )
                urllib.request.urlopen(req, timeout=60)  # noqa: S310 - our own simulator
            started = time.perf_counter()
            runs = sync_connection(connection=pm)
            took = time.perf_counter() - started
            calls = sum(int(r.counts.get("api_calls", 0)) for r in runs)
            seen = sum(int(r.counts.get("seen", 0)) for r in runs)
            print(f"{label}: {took:.1f} s, {calls} API calls, {seen} records")
            seconds[label] = took
            for r in runs:
                c = r.counts
                print(
                    f"   {r.stream:14} {r.status:9} calls={c.get('api_calls')} seen={c.get('seen')} "
                    f"inserted={c.get('inserted')} updated={c.get('updated')} "
                    f"quarantined={c.get('quarantined')} "
                    f"limited={c.get('rate_limited_seconds')} {r.error[:200]}"
                )
        copy_seconds, rows = _copy_reference()
        ratio = seconds["full"] / copy_seconds
        print(
            f"reference COPY of the rows synced (after both passes): {rows:,} rows in {copy_seconds:.2f} s = "
            f"{rows / copy_seconds:,.0f} rows/s; ratio: the full sync is {ratio:.2f}x COPY's time"
        )
    finally:
        sim.terminate()
        sim.wait(timeout=20)
    say_load("after")


if __name__ == "__main__":
    main()
