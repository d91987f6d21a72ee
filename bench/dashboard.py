"""Server time of the executive dashboard and the API lists at scale, as a report (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev CELERY_BROKER_URL=redis://127.0.0.1:6379/11 \\
        .venv/bin/python bench/dashboard.py

Drops and recreates the database ``fulcrum_api_bench`` (or ``--database NAME``) on the server of
``DATABASE_URL`` (the named database itself is never touched), migrates it, and fills it like
``bench/evaluate.py`` (set-based SQL:
2,000 clients, 10,000 projects, their change orders, invoices, bills and milestones), then with
``bulk_create``: 1,000 flagged projects (one open escalation each, mixed routes and severities), 3,000
escalations closed over the last 90 days (the trend charts), and each project's QuickBooks job in the
crosswalk (the API's ``source_ids``).

It then times, server-side through Django's test client as a signed-in executive (session auth), each
page ``--n`` times after ``--warmup`` untimed requests, and counts each page's queries once:

- ``GET /dashboard/``                        target p95 < 150 ms with ≤ 15 queries
- ``GET /api/projects/?flagged=true``        target p95 < 100 ms
- ``GET /api/escalations/``                  target p95 < 100 ms
- ``GET /api/escalations/?status=open&route=executive`` and ``GET /api/clients/?flagged=true`` (no target)

Throttling is lifted for the run (``API_THROTTLE_USER``), so the figures are the views' own cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "fulcrum_api_bench"
FLAGGED = 1_000
CLOSED = 3_000

PAGES = [
    ("/dashboard/", 0.150, 15),
    ("/api/projects/?flagged=true", 0.100, None),
    ("/api/escalations/", 0.100, None),
    ("/api/escalations/?status=open&route=executive", None, None),
    ("/api/clients/?flagged=true", None, None),
]


def _setup(*, reuse: bool, database: str = BENCH_DB) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["API_THROTTLE_USER"] = "100000000/hour"
    if reuse:
        from urllib.parse import urlsplit, urlunsplit

        import django

        parts = urlsplit(os.environ["DATABASE_URL"])
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{database}"))
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
        django.setup()
        return
    from bench.common import fresh_django_database

    fresh_django_database(database)


def fill_escalations(seed: int = 7) -> None:
    """Open escalations on 1,000 projects, closed ones over 90 days, and every project's crosswalk row."""
    from django.db.models import Min
    from django.utils import timezone

    from apps.connectors.models import Connection
    from apps.entities.models import ChangeOrder, Project, SourceObject
    from apps.escalations.models import Escalation
    from apps.rules.models import Rule, RuleVersion

    started = time.perf_counter()
    rng = random.Random(seed)
    now = timezone.now()
    spec = {
        "key": "co-exec-review",
        "name": "Change order needs executive judgment",
        "subject": "change_order",
        "route": "executive",
        "severity": "high",
    }
    rule = Rule.objects.create(key=spec["key"], name=spec["name"], subject_type="change_order", draft=spec)
    version = RuleVersion.objects.create(rule=rule, number=1, spec=spec, spec_hash="bench", published_at=now)
    Rule.objects.filter(pk=rule.pk).update(live_version=version)

    # One change order per project is enough subjects: the first of each.
    firsts = list(
        ChangeOrder.objects.values("project_id").annotate(co=Min("pk")).values_list("project_id", "co")
    )
    rng.shuffle(firsts)
    projects = Project.objects.in_bulk([p for p, _ in firsts[: FLAGGED + CLOSED]])
    severities = ["low", "medium", "high", "critical"]
    rows = []
    for i, (project_id, co_id) in enumerate(firsts[: FLAGGED + CLOSED]):
        project = projects[project_id]
        is_open = i < FLAGGED
        opened = now - dt.timedelta(days=rng.uniform(0, 20 if is_open else 88))
        closed = None if is_open else min(now, opened + dt.timedelta(hours=rng.uniform(1, 200)))
        rows.append(
            Escalation(
                rule=rule,
                rule_version=version,
                subject_type="change_order",
                subject_id=co_id,
                subject_label=f"CO {co_id} on {project.number} {project.name}",
                client_id=project.client_id,
                project=project,
                route="executive" if rng.random() < 0.4 else "standard",
                severity=rng.choice(severities),
                priority=10,
                status="open" if is_open else "resolved",
                outcome="" if is_open else rng.choice(["actioned", "false_alarm", "no_action_needed"]),
                summary="change_order.amount 60,000.00 ≥ 50,000.00 and project.margin_pct 9.5 < 12",
                evidence={
                    "facts": {"project.margin_pct": {"value": f"{rng.uniform(-5, 30):.1f}", "age_s": 600}},
                    "explanation": [],
                },
                opened_at=opened,
                last_fired_at=opened,
                closed_at=closed,
            )
        )
    Escalation.objects.bulk_create(rows, batch_size=2_000)

    accounting = Connection.objects.get(slug="accounting")
    SourceObject.objects.bulk_create(
        (
            SourceObject(
                connection=accounting,
                object_type="job",
                external_id=f"job-{p.pk}",
                name=p.name,
                match_key=p.number,
                project=p,
                match_method="number",
                source_updated_at=now,
                content_hash="",
                synced_at=now,
            )
            for p in Project.objects.only("pk", "name", "number").iterator(chunk_size=2_000)
        ),
        batch_size=2_000,
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE escalations_escalation")
        cursor.execute("ANALYZE entities_sourceobject")
    print(
        f"escalations: {FLAGGED:,} open on {FLAGGED:,} projects, {CLOSED:,} closed over 90 days; "
        f"{Project.objects.count():,} crosswalk jobs in {time.perf_counter() - started:.1f} s"
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _executive_browser() -> Any:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.test.utils import setup_test_environment

    from apps.accounts.roles import EXECUTIVES

    setup_test_environment()  # the test client's host and the locmem mail backend
    user, created = get_user_model().objects.get_or_create(username="elena", email="elena@bench.test")
    if created:
        user.groups.add(Group.objects.get(name=EXECUTIVES))
    browser = Client()
    browser.force_login(user)
    return browser


def profile(path: str) -> None:
    """cProfile of one warm request, with the time spent in SQL per statement."""
    import cProfile
    import io
    import pstats

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    browser = _executive_browser()
    browser.get(path)
    profiler = cProfile.Profile()
    with CaptureQueriesContext(connection) as ctx:
        started = time.perf_counter()
        profiler.enable()
        browser.get(path)
        profiler.disable()
        total = time.perf_counter() - started
    print(f"{path}: {total * 1000:.1f} ms, {len(ctx.captured_queries)} queries")
    for query in ctx.captured_queries:
        print(f"  {float(query['time']) * 1000:7.1f} ms  {query['sql'][:150]}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(30)
    print(out.getvalue())


def measure(n: int, warmup: int) -> bool:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    browser = _executive_browser()

    load = os.getloadavg()
    print(f"\nserver time per page, {n} timed requests after {warmup} warm-up, signed in as an executive")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    # CPU: this process's (the app server's) CPU time per request, which a loaded machine inflates far
    # less than wall time; PostgreSQL's own time is in wall time only.
    print(f"{'page':<48} {'p50 ms':>8} {'p95 ms':>8} {'CPU p50':>8} {'queries':>8}  target")
    all_met = True
    for path, p95_target, query_target in PAGES:
        for _ in range(warmup):
            assert browser.get(path).status_code == 200, path
        timings, cpu = [], []
        for _ in range(n):
            started, started_cpu = time.perf_counter(), time.process_time()
            response = browser.get(path)
            timings.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            assert response.status_code == 200, (path, response.status_code)
        with CaptureQueriesContext(connection) as ctx:
            browser.get(path)
        queries = len(ctx.captured_queries)
        p50, p95 = statistics.median(timings), _percentile(timings, 0.95)
        verdicts = []
        if p95_target is not None:
            ok = p95 < p95_target
            verdicts.append(f"p95 < {p95_target * 1000:.0f} ms {'met' if ok else 'MISSED'}")
            all_met &= ok
        if query_target is not None:
            ok = queries <= query_target
            verdicts.append(f"≤ {query_target} queries {'met' if ok else 'MISSED'}")
            all_met &= ok
        cpu50 = statistics.median(cpu)
        print(
            f"{path:<48} {p50 * 1000:>8.1f} {p95 * 1000:>8.1f} {cpu50 * 1000:>8.1f} {queries:>8}  "
            + "; ".join(verdicts)
        )
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return all_met


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--change-orders", type=int, default=30_000)
    parser.add_argument(
        "--database",
        default=BENCH_DB,
        help=f"the bench database's name (default {BENCH_DB}): a distinct one keeps concurrent runs apart",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="time the existing --database database again, no refill"
    )
    parser.add_argument("--profile", metavar="PATH", help="profile one request of PATH instead of timing")
    args = parser.parse_args()

    _setup(reuse=args.reuse, database=args.database)
    if not args.reuse:
        from bench.evaluate import fill

        fill(clients=2_000, projects=10_000, change_orders=args.change_orders)
        fill_escalations()
    if args.profile:
        profile(args.profile)
        return
    met = measure(args.n, args.warmup)
    print("\nall targets met" if met else "\nsome targets MISSED")


if __name__ == "__main__":
    main()
