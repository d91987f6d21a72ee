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

It then serves the app with gunicorn (``config.wsgi``, production settings: the trends cache in Redis as
deployed; ``bench/http_settings.py``: static files without the manifest; ``--workers`` sync workers,
default 3 as in the Procfile) on a free loopback port and times each
page over HTTP ``--n`` times after ``--warmup`` untimed requests, one request at a time, as a signed-in
executive (a session cookie), wall time at the client; queries are counted once in-process:

- ``GET /dashboard/``, trends-cache hits      target p95 < 150 ms with ≤ 15 queries
- ``GET /dashboard/``, trends-cache misses    target p95 < 100 ms (issue 20): before each timed request
  (untimed) one resolved escalation's ``closed_at`` moves to now, as when an escalation closes, so the
  cache key (escalation count and latest open/close) changes and the charts are rebuilt
- ``GET /api/projects/?flagged=true``        target p95 < 100 ms
- ``GET /api/escalations/``                  target p95 < 100 ms
- ``GET /api/escalations/?status=open&route=executive`` and ``GET /api/clients/?flagged=true`` (no target)

The reference printed beside each page is the same request served in-process by Django's test client
(no HTTP, no gunicorn), with the ratio.
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

MISS = "/dashboard/ (trends-cache miss)"
PAGES = [
    ("/dashboard/", 0.150, 15),
    (MISS, 0.100, 15),
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
    """Open escalations on 1,000 projects, closed ones over 90 days, and every project's crosswalk row.

    Each escalation's evidence is as the product keeps it: the decision it fired on (``evidence_decision``),
    holding the product's own facts and the SPEC rule's trace (``bench.audit.Payloads``), which the
    approval queue and the flagged rows read through a join."""
    import json

    from django.core.serializers.json import DjangoJSONEncoder
    from django.db.models import Min
    from django.utils import timezone

    from apps.connectors.models import Connection
    from apps.entities.models import ChangeOrder, Project, SourceObject
    from apps.escalations.models import Escalation
    from apps.rules.models import Decision, Rule, RuleVersion
    from bench.audit import Payloads

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
    payloads = Payloads()
    trace = json.loads(json.dumps(payloads.trace, cls=DjangoJSONEncoder))
    subjects = firsts[: FLAGGED + CLOSED]
    decisions = Decision.objects.bulk_create(
        (
            Decision(
                rule_version=version, subject_type="change_order", subject_id=co_id, outcome="matched",
                trigger="sync", evaluated_at=now, facts=json.loads(payloads.facts(co_id)), explanation=trace,
                summary=trace["summary"],
            )
            for _project_id, co_id in subjects
        ),
        batch_size=2_000,
    )  # fmt: skip
    rows = []
    for i, ((project_id, co_id), decision) in enumerate(zip(subjects, decisions, strict=True)):
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
                summary=decision.summary,
                opened_decision=decision,
                evidence_decision=decision,
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


def _miss_maker() -> Any:
    """Before a cache-miss request: one resolved escalation closes again now (the trends key changes)."""
    from django.db import connection

    from apps.escalations.models import Escalation

    closed = list(Escalation.objects.filter(closed_at__isnull=False).values_list("pk", flat=True)[:500])
    turn = iter(range(10**9))

    def close_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE escalations_escalation SET closed_at = clock_timestamp() WHERE id = %s",
                [closed[next(turn) % len(closed)]],
            )

    return close_one


def _gunicorn(workers: int) -> tuple[Any, str]:
    """gunicorn on production settings, this bench's database, the trends cache in Redis (this run's
    broker database), on a free loopback port; returns (process, base URL) once it answers."""
    import subprocess

    import requests
    from django.conf import settings

    from config.embedded_servers import free_port

    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.http_settings",
        "SECRET_KEY": settings.SECRET_KEY,  # the session cookie made here is valid there
        "FIELD_ENCRYPTION_KEY": ",".join(settings.FIELD_ENCRYPTION_KEY),
        "AUDIT_ANCHOR_KEY": "bench-anchor-key",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "False",
        "CACHE_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        "LOG_LEVEL": "ERROR",
        "CONN_MAX_AGE": "600",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers",
         str(workers), "--timeout", "60", "--log-level", "error"],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            requests.get(f"{base}/healthz", timeout=30)  # any answer (a 503 too) means it serves
            return process, base
        except requests.RequestException:
            time.sleep(0.3)
    process.terminate()
    process.wait(timeout=20)
    raise SystemExit("gunicorn did not start")


def measure(n: int, warmup: int, workers: int) -> bool:
    import requests
    from django.conf import settings
    from django.core.cache import caches
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench.common import say_load, verdict

    browser = _executive_browser()
    cookie = {
        "Cookie": f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    }
    close_one = _miss_maker()
    caches["default"].clear()  # the in-process reference: locmem here

    print(
        f"\npage times over loopback HTTP through gunicorn ({workers} sync workers, production settings), "
        f"{n} timed requests after {warmup} warm-up, one at a time, signed in as an executive"
    )
    say_load("before")
    print(
        f"{'page':<48} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8} {'ref p50':>8} {'ref p95':>8} "
        f"{'ratio':>6}  target"
    )
    print(f"{'':<48} {'':>8} {'':>8} {'':>8} {'(in-process, test client)':>24}")
    all_met = True
    server, base = _gunicorn(workers)
    try:
        with requests.Session() as http:
            for label, p95_target, query_target in PAGES:
                path = "/dashboard/" if label == MISS else label
                before = close_one if label == MISS else (lambda: None)

                def over_http(path: str = path) -> None:
                    response = http.get(base + path, headers=cookie, allow_redirects=False, timeout=60)
                    assert response.status_code == 200, (path, response.status_code)

                def in_process(path: str = path) -> None:
                    response = browser.get(path)
                    assert response.status_code == 200, (path, response.status_code)

                timings = _times(over_http, before, n, warmup)
                reference = _times(in_process, before, n, warmup)
                if label == MISS:
                    close_one()
                with CaptureQueriesContext(connection) as ctx:
                    browser.get(path)
                queries = len(ctx.captured_queries)
                p50, p95 = statistics.median(timings), _percentile(timings, 0.95)
                r50, r95 = statistics.median(reference), _percentile(reference, 0.95)
                verdicts = []
                if p95_target is not None:
                    ok = p95 < p95_target
                    verdicts.append(f"p95 < {p95_target * 1000:.0f} ms {verdict(ok)}")
                    all_met &= ok
                if query_target is not None:
                    ok = queries <= query_target
                    verdicts.append(f"≤ {query_target} queries {verdict(ok)}")
                    all_met &= ok
                print(
                    f"{label:<48} {p50 * 1000:>8.1f} {p95 * 1000:>8.1f} {queries:>8} {r50 * 1000:>8.1f} "
                    f"{r95 * 1000:>8.1f} {p95 / r95:>5.2f}x  " + "; ".join(verdicts)
                )
    finally:
        server.terminate()
        server.wait(timeout=20)
    say_load("after")
    return all_met


def _times(request: Any, before: Any, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        before()
        request()
    timings = []
    for _ in range(n):
        before()
        started = time.perf_counter()
        request()
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--change-orders", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (the Procfile's default 3)")
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
    met = measure(args.n, args.warmup, args.workers)
    print("\nall targets met" if met else "\nsome targets MISSED")


if __name__ == "__main__":
    main()
