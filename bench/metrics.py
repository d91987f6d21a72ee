"""/metrics scrape time and the database snapshot behind it, as a report (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev .venv/bin/python -m bench.metrics [--escalations N]

Creates (afresh) and migrates ``fulcrum_bench_metrics`` on the server of DATABASE_URL, plants
``--escalations`` open escalations with 5 outbox rows and 2 decisions each, 40 stream states, 2,000 sync
runs, 5,000 webhook inbox rows and 500 pending evaluations, takes the snapshot (``metrics_snapshot_take``,
as the worker does every 15 s), then times 200 scrapes of ``/metrics`` through Django's test client (the
whole middleware stack, no network). Target: scrape p95 < 50 ms. Reference, measured in the same run: the
exposition text made from the same snapshot by a direct call (``generate_latest(registry())``, what the view
returns, without the request); the ratio of the two p95s is the web stack's share. Prints the load average
before and after.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "fulcrum_bench_metrics"


def _plant(n: int) -> None:
    import datetime as dt

    from django.utils import timezone

    from apps.connectors.models import StreamState, SyncRun, WebhookDelivery
    from apps.escalations.models import Delivery, Escalation

    # Imported by name: the test helpers are not type-checked (mypy excludes tests/).
    make_escalation = importlib.import_module("apps.escalations.tests.helpers").make_escalation
    from apps.rules.models import Decision, PendingEvaluation
    from tests.factories import ConnectionFactory

    now = timezone.now()
    first = make_escalation()
    base = {
        f.attname: getattr(first, f.attname) for f in Escalation._meta.concrete_fields if f.attname != "id"
    }
    Escalation.objects.bulk_create(
        [Escalation(**{**base, "subject_id": first.subject_id + i + 1}) for i in range(n - 1)],
        batch_size=2000,
    )
    ids = list(Escalation.objects.values_list("pk", flat=True))
    actions = ["email_account_manager", "email_executives", "flag_dashboard", "note_crm", "note_accounting"]
    Delivery.objects.bulk_create(
        [
            Delivery(
                escalation_id=e,
                action=a,
                target="t",
                idempotency_key=f"{e}:{a}",
                state="delivered",
                next_attempt_at=now,
                created_at=now,
            )
            for e in ids
            for a in actions
        ],
        batch_size=5000,
    )
    Decision.objects.bulk_create(
        [
            Decision(
                rule_version=first.rule_version,
                subject_type="change_order",
                subject_id=e,
                outcome=o,
                trigger="sync",
                evaluated_at=now,
                summary="",
            )
            for e in ids
            for o in ("matched", "not_matched")
        ],
        batch_size=5000,
    )
    connections: list[Any] = [ConnectionFactory(slug=f"c{i}") for i in range(8)]
    for c in connections:
        for s in range(5):
            StreamState.objects.create(
                connection=c, stream=f"s{s}", last_success_at=now - dt.timedelta(minutes=s)
            )
    SyncRun.objects.bulk_create(
        [
            SyncRun(
                connection=connections[i % 8],
                stream=f"s{i % 5}",
                started_at=now,
                heartbeat_at=now,
                status="succeeded",
                counts={"seen": 100},
            )
            for i in range(2000)
        ]
    )
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                connection=connections[i % 8],
                event_id=f"e{i}",
                status="processed",
                received_at=now,
                status_changed_at=now,
            )
            for i in range(5000)
        ],
        batch_size=5000,
    )
    PendingEvaluation.objects.bulk_create(
        [
            PendingEvaluation(subject_type="project", subject_id=i, trigger="webhook", queued_at=now)
            for i in range(500)
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--escalations", type=int, default=5000)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.common import fresh_django_database, percentile, say_load

    say_load("before")
    fresh_django_database(DB_NAME)
    from django.test import Client
    from prometheus_client import generate_latest

    from apps.ops.metrics import registry
    from apps.ops.snapshot import metrics_snapshot_take

    started = time.perf_counter()
    _plant(args.escalations)
    print(f"planted {args.escalations} escalations in {time.perf_counter() - started:.1f} s")
    takes = []
    for _ in range(5):
        t = time.perf_counter()
        metrics_snapshot_take()
        takes.append(time.perf_counter() - t)
    client = Client()
    client.get("/metrics")  # warm: imports, the first connection
    times = []
    for _ in range(args.scrapes):
        t = time.perf_counter()
        response = client.get("/metrics")
        times.append(time.perf_counter() - t)
        assert response.status_code == 200
    direct = []
    for _ in range(args.scrapes):
        t = time.perf_counter()
        text = generate_latest(registry())
        direct.append(time.perf_counter() - t)
    p95, reference = percentile(times, 0.95), percentile(direct, 0.95)
    print(f"snapshot: median {statistics.median(takes) * 1000:.1f} ms over 5 (the worker's cost every 15 s)")
    print(
        f"scrape: {len(response.content)} bytes; p50 {statistics.median(times) * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms, max {max(times) * 1000:.1f} ms over {args.scrapes}"
    )
    print(
        f"reference, the same exposition by a direct call ({len(text)} bytes): p50 "
        f"{statistics.median(direct) * 1000:.1f} ms, p95 {reference * 1000:.1f} ms; ratio of the p95s "
        f"{p95 / reference:.2f}x"
    )
    print(f"target p95 < 50 ms: {'met' if p95 < 0.05 else 'MISSED'}")
    say_load("after")


if __name__ == "__main__":
    main()
