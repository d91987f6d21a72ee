"""Rule evaluation costs at scale, as a report (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/evaluate.py

Drops and recreates the database ``fulcrum_bench`` on the server of ``DATABASE_URL`` (the named database
itself is never touched), migrates it, fills it with set-based SQL (``generate_series``): 2,000 clients,
10,000 projects, 100,000 change orders, invoices, bills and milestones; imports 50 rules (variants of
the SPEC rule), then times

1. fact computation: ``compute_contexts`` for every change order;
2. the Python match phase: 50 compiled conditions × every context (``matches`` and ``evaluate``);
3. the SQL match phase: ``sql.batch_outcomes`` and ``sql.matching_ids`` for the SPEC rule, and all 50
   rules in one query;
4. one hand-written SQL query producing the SPEC rule's matches (the physical reference), timed in the
   same rounds as phase 3's SPEC-rule queries (``--match-rounds``, each round runs the three in turn): the
   target compares each side's best round (the medians are printed beside it);
5. the full ``evaluate_subjects`` run (facts + matching + decision writes + escalations) for all 50
   rules, cold (no prior state) and warm (a repeat run), profiled with ``--profile``;
6. one subject against the 50 rules, facts included, p50/p95 over 200 random subjects;
7. with ``--peer zen``: the pure evaluator (``matches``, ages and ``max_age`` as the product calls it) against
   GoRules ZEN's compiled expressions (``zen-engine``, the optional extra ``[peers]``) on the same contexts,
   each rule translated to ZEN's expression language; µs per evaluation and the ratio.

``--match-phase-only`` times phases 3 and 4 for the SPEC rule alone and prints every round (for A/B work).

Targets (issue 20, 2-core machine): full run warm ≤ 4 s, cold ≤ 7 s; match phase ≤ 2× the hand-written SQL;
one subject p95 < 5 ms. Prints each reference, the ratio, and the load average before and after.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("FULCRUM_BENCH_DB", "fulcrum_bench")  # one per engineer on a shared server
WARM_RUN_TARGET = 4.0
COLD_RUN_TARGET = 7.0
MATCH_RATIO_TARGET = 2.0
ONE_SUBJECT_P95_TARGET = 0.005


# --- set-up ----------------------------------------------------------------------------------------------


def _setup(database: str = BENCH_DB) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.common import fresh_django_database

    fresh_django_database(database)


# Every column the inserts fill; Sourced columns first. Values are SQL expressions over the series.
_SOURCED = "source_id, external_id, source_updated_at, content_hash, synced_at"

_FILL = [
    "SELECT setseed(0.42)",
    f"""INSERT INTO entities_crmowner ({_SOURCED}, email, name)
        SELECT %(crm)s, 'o' || g, now(), '', now(), 'owner' || g || '@bench.test', 'Owner ' || g
        FROM generate_series(1, 50) g""",
    f"""INSERT INTO entities_client ({_SOURCED}, name, domain, owner_id, owner_ref, renewal_date)
        SELECT %(crm)s, 'c' || g, now(), '', now(), 'Client ' || g, 'client' || g || '.test',
            (SELECT min(id) FROM entities_crmowner) + g %% 50, '',
            CASE WHEN random() < 0.15 THEN NULL ELSE CURRENT_DATE + (random() * 730 - 100)::int END
        FROM generate_series(1, %(clients)s) g""",
    f"""INSERT INTO entities_project ({_SOURCED}, client_id, name, number, accounting_ref, contract_value,
            schedule_status, start_date, completion_date)
        SELECT %(pm)s, 'p' || g, now(), '', now(), (SELECT min(id) FROM entities_client) + g %% %(clients)s,
            'Project ' || g, 'P-' || g, '',
            CASE WHEN random() < 0.03 THEN NULL ELSE round((200000 + random() * 4800000)::numeric, 2) END,
            (ARRAY['on_track', 'at_risk', 'behind', ''])[1 + floor(random() * 4)::int],
            CURRENT_DATE - 400, CURRENT_DATE + 200
        FROM generate_series(1, %(projects)s) g""",
    """CREATE TEMP TABLE bench_money AS
        SELECT id, COALESCE(contract_value, 1000000) AS base, random() < 0.1 AS no_income,
            0.2 + random() * 0.6 AS billed, 0.6 + random() * 0.45 AS cost_ratio
        FROM entities_project""",
    f"""INSERT INTO entities_financialline ({_SOURCED}, kind, project_id, job_ref, amount, balance, txn_date,
            due_date)
        SELECT %(acc)s, 'inv-' || m.id || '-' || k, now(), '', now(), 'invoice', m.id, '',
            round((m.base * m.billed / 3)::numeric, 2),
            CASE WHEN random() < 0.2 THEN round((m.base * m.billed / 3 * random())::numeric, 2) ELSE 0 END,
            CURRENT_DATE - 120 + k * 30, CURRENT_DATE - 90 + k * 30
        FROM bench_money m, generate_series(1, 3) k WHERE NOT m.no_income""",
    f"""INSERT INTO entities_financialline ({_SOURCED}, kind, project_id, job_ref, amount, balance, txn_date,
            due_date)
        SELECT %(acc)s, 'bill-' || m.id || '-' || k, now(), '', now(),
            (ARRAY['bill', 'purchase'])[1 + k %% 2], m.id, '',
            round((m.base * m.billed * m.cost_ratio / 3)::numeric, 2), NULL, CURRENT_DATE - 100 + k * 30, NULL
        FROM bench_money m, generate_series(1, 3) k""",
    f"""INSERT INTO entities_milestone ({_SOURCED}, project_id, project_ref, name, due_date, completed_date)
        SELECT %(pm)s, 'm-' || s.id || '-' || s.k, now(), '', now(), s.id, 'p' || s.id, 'Milestone ' || s.k,
            s.due, CASE WHEN random() < 0.3 THEN NULL ELSE s.due + (random() * 20 - 12)::int END
        FROM (SELECT p.id, k, CURRENT_DATE - 250 + k * 60 + (random() * 30)::int AS due
              FROM entities_project p, generate_series(1, 4) k) s""",
    f"""INSERT INTO entities_changeorder ({_SOURCED}, project_id, project_ref, number, title, status, amount,
            created_upstream_at)
        SELECT %(pm)s, 'co' || g, now(), '', now(), s.pid, 'p' || s.pid, 'CO-' || g, 'Change ' || g,
            (ARRAY['draft', 'pending', 'pending', 'pending', 'approved', 'approved', 'rejected', 'void'])
                [1 + floor(random() * 8)::int],
            round((random() ^ 4 * 120000)::numeric, 2), now() - random() * interval '400 days'
        FROM (SELECT g, (SELECT min(id) FROM entities_project) + g %% %(projects)s AS pid
              FROM generate_series(1, %(change_orders)s) g) s""",
    "DROP TABLE bench_money",
]


def fill(clients: int, projects: int, change_orders: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from apps.connectors.models import Connection, StreamState
    from apps.rules.evaluation.facts import ENTITY_STREAMS

    started = time.perf_counter()
    conns = {
        slug: Connection.objects.create(slug=slug, kind=kind, base_url="http://127.0.0.1:9")
        for slug, kind in (("crm", "hubspot"), ("pm", "procore"), ("accounting", "quickbooks"))
    }
    params = {
        "crm": conns["crm"].pk,
        "pm": conns["pm"].pk,
        "acc": conns["accounting"].pk,
        "clients": clients,
        "projects": projects,
        "change_orders": change_orders,
    }
    with connection.cursor() as cursor:
        for statement in _FILL:
            cursor.execute(statement, params)
        for table in ("client", "project", "changeorder", "milestone", "financialline"):
            cursor.execute(f"ANALYZE entities_{table}")
    synced = timezone.now() - dt.timedelta(minutes=5)
    owner = {"client": "crm", "financial_line": "accounting"}
    for entity, streams in ENTITY_STREAMS.items():
        for stream in streams:
            StreamState.objects.create(
                connection=conns[owner.get(entity, "pm")], stream=stream, last_success_at=synced
            )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM entities_financialline")
        lines = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM entities_milestone")
        milestones = cursor.fetchone()[0]
    print(
        f"data: {clients:,} clients, {projects:,} projects, {change_orders:,} change orders, "
        f"{lines:,} invoice/bill lines, {milestones:,} milestones in {time.perf_counter() - started:.1f} s"
    )


def rule_variants(n: int) -> str:
    """The SPEC rule (the demo's rules file) and ``n - 1`` variants: other thresholds, facts, shapes."""
    from apps.accounts.demo import DEMO_RULES

    rng = random.Random(7)
    rules = [DEMO_RULES.read_text()]
    # Threshold rules route the exceptions: each variant matches well under 1% of the change orders
    # (the SPEC rule, which reads no status, 4.6%). A rule set matching most subjects every night would be
    # an alert flood, not a workload (the variants of session 3 matched 96% of them between them).
    shapes = [
        "    all:\n      - {{fact: change_order.amount, op: gte, value: {a}}}\n"
        "      - {{fact: change_order.status, op: eq, value: pending}}\n"
        "      - {{fact: project.margin_pct, op: lt, value: {m}}}\n"
        "      - any:\n          - {{fact: client.missed_last_milestone, op: is, value: true}}\n"
        "          - {{fact: client.days_to_renewal, op: lte, value: {d}}}\n",
        "    all:\n      - {{fact: change_order.amount_pct_of_contract, op: gte, value: {p}}}\n"
        "      - {{fact: change_order.status, op: eq, value: pending}}\n",
        "    all:\n      - {{fact: project.milestones_missed, op: gte, value: {k}}}\n"
        "      - {{fact: project.days_behind_schedule, op: gt, value: {b}}}\n"
        "      - {{fact: change_order.amount, op: gte, value: {a}}}\n"
        "      - {{fact: change_order.status, op: eq, value: pending}}\n",
        "    all:\n      - {{fact: client.ar_overdue_amount, op: gt, value: {a}}}\n"
        "      - not: {{fact: project.schedule_status, op: eq, value: on_track}}\n"
        "      - {{fact: change_order.age_days, op: between, value: [0, {d}]}}\n"
        "      - {{fact: change_order.amount, op: gte, value: 50000}}\n"
        "      - {{fact: change_order.status, op: eq, value: pending}}\n",
        "    all:\n      - {{fact: project.change_order_amount_30d, op: gte, value: {a}}}\n"
        "      - {{fact: project.margin_pct, op: between, value: [-50, {m}]}}\n"
        "      - {{fact: change_order.amount, op: gte, value: 60000}}\n"
        "      - {{fact: change_order.status, op: eq, value: pending}}\n",
    ]
    for i in range(1, n):
        when = shapes[i % len(shapes)].format(
            a=rng.choice([75000, 100000]),
            m=rng.choice([0, 5, 8]),
            d=rng.choice([14, 30, 45]),
            p=rng.choice([15, 20, 30]),
            k=rng.choice([3, 4]),
            b=rng.choice([20, 30]),
        )
        rules.append(
            f"- key: variant-{i:02d}\n  name: Variant {i}\n  subject: change_order\n  when:\n{when}"
            f"  route: standard\n  severity: medium\n  priority: {100 + i}\n  actions: [flag_dashboard]\n"
            "  max_fact_age: 24h\n"
        )
    return "".join(rules)


# The physical reference: only the four facts the SPEC rule reads, with the facts query's own arithmetic.
HAND_WRITTEN = """
WITH money AS (
    SELECT project_id,
        SUM(amount) FILTER (WHERE kind = 'invoice') AS income,
        SUM(amount) FILTER (WHERE kind IN ('bill', 'purchase')) AS cost
    FROM entities_financialline WHERE deleted_at IS NULL GROUP BY project_id
), last_ms AS (
    SELECT client_id, bool_or(missed) AS missed FROM (
        SELECT p.client_id, (m.completed_date IS NULL OR m.completed_date > m.due_date) AS missed,
            RANK() OVER (PARTITION BY p.client_id ORDER BY m.due_date DESC) AS recency
        FROM entities_milestone m JOIN entities_project p ON p.id = m.project_id
        WHERE m.deleted_at IS NULL AND p.deleted_at IS NULL AND m.due_date < %(today)s
    ) ranked WHERE recency = 1 GROUP BY client_id
)
SELECT co.id FROM entities_changeorder co
JOIN entities_project p ON p.id = co.project_id
JOIN money ON money.project_id = p.id
LEFT JOIN entities_client c ON c.id = p.client_id
LEFT JOIN last_ms ON last_ms.client_id = c.id
WHERE co.deleted_at IS NULL AND co.amount >= 50000
  AND ROUND((money.income - COALESCE(money.cost, 0)) / NULLIF(money.income, 0) * 100, 4) < 12
  AND (last_ms.missed OR c.renewal_date - %(today)s <= 60)
ORDER BY co.id
"""


# --- measuring ---------------------------------------------------------------------------------------------


def timed(run: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """(median seconds, last result) over ``repeat`` runs."""
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def line(label: str, seconds: float, count: int | None = None, unit: str = "subjects") -> None:
    rate = f"{count / seconds:12,.0f} {unit}/s" if count else ""
    print(f"  {label:<58}{seconds:8.2f} s {rate}")


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--change-orders", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2_000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query timing (median)")
    parser.add_argument("--samples", type=int, default=200, help="subjects for the one-subject latency")
    parser.add_argument("--peer", choices=["zen"], help="also time GoRules ZEN on the same contexts")
    parser.add_argument("--profile", action="store_true", help="profile a third (warm) evaluate_subjects run")
    parser.add_argument(
        "--profile-cold",
        action="store_true",
        help="after the timed runs, clear decisions, states and escalations and profile a cold run again",
    )
    parser.add_argument(
        "--full-run-only",
        action="store_true",
        help="skip phases 1-4 and 6: only the cold and warm full runs (for iterating on them)",
    )
    parser.add_argument(
        "--profile-top", type=int, default=0, help="also print the N functions with most own time"
    )
    parser.add_argument(
        "--spec-rule-only",
        action="store_true",
        help="full runs with the SPEC rule alone (session 3's figure)",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="time the full runs' main steps (inclusive wall seconds, no profiler overhead)",
    )
    parser.add_argument(
        "--match-rounds",
        type=int,
        default=7,
        help="rounds of the SPEC rule's match phase: batch_outcomes, matching_ids and the hand-written SQL "
        "once each per round, interleaved; the target compares the best round of each side",
    )
    parser.add_argument(
        "--match-phase-only",
        action="store_true",
        help="skip phases 1, 2, 5 and 6 and the 50-rule query: the SPEC rule's match phase alone, every "
        "round printed",
    )
    parser.add_argument(
        "--database",
        default=BENCH_DB,
        help=f"the database to drop, create and fill (default {BENCH_DB}): a distinct one keeps runs apart",
    )
    args = parser.parse_args()

    print(f"load average before: {_load()} ({os.cpu_count()} cores)")
    _setup(args.database)
    fill(args.clients, args.projects, args.change_orders)

    from django.utils import timezone

    from apps.orchestration.pipeline import evaluate_subjects
    from apps.rules.engine.evaluator import compile_condition
    from apps.rules.evaluation.facts import compute_contexts
    from apps.rules.evaluation.services import live_versions, rules_import
    from apps.rules.evaluation.sql import RuleQuery, batch_outcomes_many
    from apps.rules.models import Decision, Rule

    started = time.perf_counter()
    rules_import(text=rule_variants(args.rules), actor="system:bench")
    versions = live_versions("change_order")
    print(f"rules: {len(versions)} imported in {time.perf_counter() - started:.1f} s")
    spec_version = next(v for v in versions if v.rule.key == "co-exec-review")
    now = timezone.now()
    n = args.change_orders
    compiled = [
        (compile_condition(v.spec["when"], "change_order"), RuleQuery.of(v).max_age) for v in versions
    ]
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {_load()}; "
        f"{n:,} change orders; {len(versions)} rules\n"
    )

    if args.full_run_only:
        full_runs(args, evaluate_subjects, Rule, Decision)
        return
    if args.match_phase_only:
        match_phase(spec_version, now, args.match_rounds)
        return

    # 1. facts
    facts_s, contexts = timed(lambda: list(compute_contexts("change_order", now=now)), args.repeat)
    line("1. facts: compute_contexts, every change order", facts_s, len(contexts))

    # 2. Python match phase
    def python_match(full: bool) -> list[dict[int, str]]:
        out: list[dict[int, str]] = [{} for _ in compiled]
        for ctx in contexts:
            values, ages = ctx.values, ctx.ages
            for result, (condition, max_age) in zip(out, compiled, strict=True):
                if full:
                    result[ctx.subject_id] = condition.evaluate(
                        values, ages=ages, max_age=max_age
                    ).outcome.value
                else:
                    result[ctx.subject_id] = condition.matches(values, ages=ages, max_age=max_age).value
        return out

    py_s, py_outcomes = timed(lambda: python_match(False))
    line(f"2. Python match, {len(compiled)} rules (matches, short-circuit)", py_s, n * len(compiled), "evals")
    py_full_s, _ = timed(lambda: python_match(True))
    line(
        f"   Python match, {len(compiled)} rules (evaluate, with trace)",
        py_full_s,
        n * len(compiled),
        "evals",
    )

    # 3. SQL match phase, with 4. the physical reference: the SPEC rule's three queries interleaved.
    # The bench's own data (100k contexts, 5M outcomes) is no garbage: frozen, no collection of it lands
    # inside whichever query happens to be running (one took 220 ms in a run of matching_ids).
    gc.freeze()
    spec = match_phase(spec_version, now, args.match_rounds, verbose=False)
    spec_sql_s = spec.median("batch_outcomes")
    line("3. SQL: batch_outcomes, the SPEC rule (facts + match)", spec_sql_s, n)
    ids_s = spec.median("matching_ids")
    line("   SQL: matching_ids, the SPEC rule (WHERE over the facts)", ids_s, n)
    many_s, many = timed(lambda: batch_outcomes_many(versions, "change_order", now=now), args.repeat)
    line(f"   SQL: batch_outcomes_many, {len(versions)} rules in one query", many_s, n)
    agree = many == py_outcomes
    print(f"   SQL outcomes == Python outcomes for all {len(versions)} rules × {n:,} subjects: {agree}")
    hand_s = spec.median("hand-written")
    line("4. hand-written SQL for the SPEC rule (matches only)", hand_s, n)
    print(f"   same matches as batch_outcomes and matching_ids: {spec.same} ({spec.matches:,} matches)")
    gc.unfreeze()

    # 5. full run: every rule (or the SPEC rule alone, --spec-rule-only)
    rules = 1 if args.spec_rule_only else len(versions)
    timings = full_runs(args, evaluate_subjects, Rule, Decision)

    # 6. one subject, 50 rules, facts included
    rng = random.Random(11)
    ids = rng.sample([c.subject_id for c in contexts], min(args.samples, len(contexts)))
    latencies = []
    for sid in ids:
        started = time.perf_counter()
        [ctx] = list(compute_contexts("change_order", [sid], now=now))
        for condition, max_age in compiled:
            condition.evaluate(ctx.values, ages=ctx.ages, max_age=max_age)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"  6. one subject, facts + {len(compiled)} rules: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
    )

    # targets
    if args.peer == "zen":
        zen_peer(contexts, versions, compiled)

    print(f"\ntargets (load average after: {_load()})")
    cold, warm = timings
    print(
        f"  full run, {rules} rules: warm {warm:.2f} s (≤ {WARM_RUN_TARGET:.0f} s "
        f"{verdict(warm <= WARM_RUN_TARGET)}), "
        f"cold {cold:.2f} s (≤ {COLD_RUN_TARGET:.0f} s {verdict(cold <= COLD_RUN_TARGET)})"
    )
    for label, name in (
        ("batch_outcomes (every outcome)", "batch_outcomes"),
        ("matching_ids (matches only)", "matching_ids"),
    ):
        best = spec.ratio(name, min)
        print(
            f"  match phase ≤ {MATCH_RATIO_TARGET:.0f}× hand-written SQL, SPEC rule, {label}: best of "
            f"{args.match_rounds} interleaved rounds, both sides: {min(spec.times[name]):.3f} s / "
            f"{min(spec.times['hand-written']):.3f} s = {best:.2f}×  {verdict(best <= MATCH_RATIO_TARGET)} "
            f"(medians {spec.ratio(name, statistics.median):.2f}×)"
        )
    print(
        f"     (for reference: {len(versions)} rules in one query {many_s / hand_s:.2f}×, i.e. "
        f"{many_s / len(versions) / hand_s:.2f}× per rule; the Python path is the facts "
        f"{facts_s / hand_s:.2f}× plus {py_s / len(compiled) / hand_s:.2f}× per rule)"
    )
    print(
        f"  one subject p95 < {ONE_SUBJECT_P95_TARGET * 1000:.0f} ms: {p95 * 1000:.1f} ms  "
        f"{verdict(p95 < ONE_SUBJECT_P95_TARGET)}"
    )


_ZEN_OPS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<", "eq": "==", "ne": "!=", "is": "=="}


def zen_expression(condition: dict[str, Any]) -> str:
    """A rule's ``when`` in ZEN's expression language (facts as paths into a nested context)."""
    import json

    if "all" in condition:
        return "(" + " and ".join(zen_expression(c) for c in condition["all"]) + ")"
    if "any" in condition:
        return "(" + " or ".join(zen_expression(c) for c in condition["any"]) + ")"
    if "not" in condition:
        return f"not ({zen_expression(condition['not'])})"
    fact, op, value = condition["fact"], condition["op"], condition["value"]
    if op == "between":
        low, high = value
        return f"({fact} >= {json.dumps(low)} and {fact} <= {json.dumps(high)})"
    if op in ("in", "not_in"):
        test = f"{fact} in {json.dumps(list(value))}"
        return test if op == "in" else f"not ({test})"
    return f"{fact} {_ZEN_OPS[op]} {json.dumps(value)}"


def _zen_context(values: dict[str, Any]) -> dict[str, Any]:
    """A context's facts as ZEN reads them: nested by subject, JSON values (decimals as floats)."""
    import decimal

    nested: dict[str, Any] = {}
    for name, value in values.items():
        subject, _, fact = name.partition(".")
        if isinstance(value, decimal.Decimal):
            value = float(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        nested.setdefault(subject, {})[fact] = value
    return nested


def zen_peer(contexts: list[Any], versions: list[Any], compiled: list[Any]) -> None:
    """Pure evaluator vs GoRules ZEN's compiled expressions, every rule × every context, same contexts."""
    from importlib.metadata import PackageNotFoundError, version

    import zen

    try:
        zen_version = version("zen-engine")
    except PackageNotFoundError:  # the shared environment was reinstalled under a running bench
        zen_version = "?"

    expressions = [zen.compile_expression(zen_expression(v.spec["when"])) for v in versions]
    documents = [_zen_context(ctx.values) for ctx in contexts]  # converted beforehand, untimed
    pairs = len(contexts) * len(versions)

    def ours() -> list[bool]:
        out = []
        for ctx in contexts:
            values, ages = ctx.values, ctx.ages
            for condition, max_age in compiled:
                out.append(condition.matches(values, ages=ages, max_age=max_age).value == "matched")
        return out

    def theirs() -> list[bool]:
        out = []
        for document in documents:
            for expression in expressions:
                try:
                    out.append(expression.evaluate(document) is True)
                except Exception:  # ZEN raises where a fact is missing or of another type
                    out.append(False)
        return out

    ours_s, our_matches = timed(ours)
    zen_s, zen_matches = timed(theirs)
    agree = sum(a == b for a, b in zip(our_matches, zen_matches, strict=True))
    print(
        f"  7. peer: GoRules ZEN {zen_version} compiled expressions, {len(versions)} rules × "
        f"{len(contexts):,} contexts"
    )
    line("     pure evaluator (matches, with ages and max_age)", ours_s, pairs, "evals")
    line("     reference ZEN (compile_expression(...).evaluate)", zen_s, pairs, "evals")
    print(
        f"     {ours_s / pairs * 1e6:.2f} vs {zen_s / pairs * 1e6:.2f} µs per evaluation; ratio: ZEN takes "
        f"{zen_s / ours_s:.2f}x the pure evaluator's time; outcomes agree on {agree:,} of {pairs:,} "
        f"({sum(our_matches):,} vs {sum(zen_matches):,} matches; ZEN has no unknown: a missing fact "
        "compares false)"
    )


def full_runs(
    args: argparse.Namespace, evaluate_subjects: Callable[..., Any], Rule: Any, Decision: Any
) -> list[float]:
    """Every live rule over every change order: cold (no prior state), then warm; profiles on request."""
    from apps.rules.models import EvaluationRun

    if args.spec_rule_only:
        Rule.objects.exclude(key="co-exec-review").update(enabled=False)
    # The rules a change-order run evaluates: the demo rules file also holds rules of other subject types
    # (documents), which such a run neither reads nor evaluates.
    rules = Rule.objects.filter(enabled=True, subject_type="change_order").count()
    timings = []
    phases = Phases() if args.phases else None
    for label in ("cold: no prior state", "warm: repeat run"):
        if phases:
            phases.reset()
        backend = _backend_cpu()
        started = time.perf_counter()
        cpu = time.process_time()
        report = evaluate_subjects(subject_type="change_order", trigger="schedule")
        seconds = time.perf_counter() - started
        backend_seconds = _backend_cpu(backend)
        timings.append(seconds)
        line(f"5. evaluate_subjects, {rules} rules, {label}", seconds, report.subjects * rules, "pairs")
        run = EvaluationRun.objects.order_by("-id").first()
        traced = sum(counts["decisions"] for counts in run.outcomes) if run else 0
        print(f"     {report}; {traced:,} pairs traced")
        print(
            f"     this process's CPU {time.process_time() - cpu:.2f} s; its PostgreSQL backend's CPU "
            f"{backend_seconds}; load {_load()}"
        )
        if phases:
            phases.show()
    if args.profile:
        profile_full_run(evaluate_subjects, "warm", args.profile_top)
    if args.profile_cold:
        _clear_evaluations()
        profile_full_run(evaluate_subjects, "cold", args.profile_top)
    print(f"   decisions stored: {Decision.objects.count():,}; runs: {EvaluationRun.objects.count()}")
    Rule.objects.update(enabled=True)
    return timings


# Steps of a full run, timed inclusively (nested steps count in their callers too).
PHASE_STEPS = {
    "apps.rules.evaluation.runs": ("run_start", "store_snapshots", "prior_outcomes"),
    "apps.rules.evaluation.sql": ("outcome_sets_many",),
    "apps.rules.evaluation.services": ("decide", "decisions_record", "_claim_states"),
    "apps.orchestration.pipeline": (
        "batch_run",
        "audit_append_many",
        "compute_contexts",
        "escalations_open",
        "decide",
        "decisions_record",
        "open_escalations",
        "refires_write",
        "escalation_auto_resolve",
    ),
    "apps.escalations.refire": ("refires_write", "escalations_refire"),
    "apps.escalations.opening": ("_round", "_after_opening", "_claim"),
    "apps.escalations.services": ("subjects_parties", "actions_plan", "_events"),
    "apps.escalations.policies": ("policies_freeze",),
    "apps.escalations.noise": ("notify_many", "deliveries_dispatch"),
}


class Phases:
    """Wall seconds and calls per step, by wrapping the module-level functions (a generator is timed
    inside each of its steps)."""

    def __init__(self) -> None:
        import importlib
        import inspect

        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        for module_name, names in PHASE_STEPS.items():
            module = importlib.import_module(module_name)
            for name in names:
                func = getattr(module, name)  # a step that no longer exists fails loudly
                label = f"{module_name.rsplit('.', 1)[-1]}.{name}"
                wrap = self._generator if inspect.isgeneratorfunction(func) else self._function
                setattr(module, name, wrap(func, label))

    def _add(self, label: str, seconds: float, call: bool) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds
        self.calls[label] = self.calls.get(label, 0) + call

    def _function(self, func: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self._add(label, time.perf_counter() - started, True)

        return timed_call

    def _generator(self, func: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed_generator(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            items = func(*args, **kwargs)
            self._add(label, time.perf_counter() - started, True)
            while True:
                started = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    self._add(label, time.perf_counter() - started, False)
                    return
                self._add(label, time.perf_counter() - started, False)
                yield item

        return timed_generator

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def show(self) -> None:
        for label, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            print(f"       {seconds:8.2f} s {self.calls[label]:7,d} calls  {label}")


@dataclass
class MatchPhase:
    """Each side's seconds per round and its last result."""

    times: dict[str, list[float]]
    results: dict[str, Any]

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def ratio(self, name: str, pick: Callable[[list[float]], float]) -> float:
        """``name`` over the hand-written reference, the same statistic of each side's rounds."""
        return pick(self.times[name]) / pick(self.times["hand-written"])

    @property
    def matches(self) -> int:
        return len(self.results["hand-written"])

    @property
    def same(self) -> bool:
        outcomes = self.results["batch_outcomes"]
        matched = sorted(sid for sid, outcome in outcomes.items() if outcome == "matched")
        return matched == self.results["matching_ids"] == self.results["hand-written"]


def match_phase(spec_version: Any, now: dt.datetime, rounds: int, *, verbose: bool = True) -> MatchPhase:
    """Phases 3 and 4 for the SPEC rule: each round runs ``batch_outcomes``, ``matching_ids`` and the
    hand-written reference once, in that order, so both sides of a ratio share the same minutes of a
    shared machine (the reference alone moved 0.08-0.14 s between runs, session 11)."""
    from django.db import connection

    from apps.rules.evaluation.facts import evaluation_date
    from apps.rules.evaluation.sql import batch_outcomes, matching_ids

    today = evaluation_date(now)

    def hand_written() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(HAND_WRITTEN, {"today": today})
            return [row[0] for row in cursor.fetchall()]

    sides: dict[str, Callable[[], Any]] = {
        "batch_outcomes": lambda: batch_outcomes(spec_version, now=now),
        "matching_ids": lambda: matching_ids(spec_version, now=now),
        "hand-written": hand_written,
    }
    phase = MatchPhase({name: [] for name in sides}, {})
    backend = _backend_cpu()
    cpu = time.process_time()
    for i in range(rounds):
        for name, run in sides.items():
            started = time.perf_counter()
            phase.results[name] = run()
            phase.times[name].append(time.perf_counter() - started)
        if verbose:
            print(
                f"  round {i + 1}: "
                + ", ".join(f"{name} {phase.times[name][-1] * 1000:.0f} ms" for name in sides)
                + f" (load {_load()})"
            )
    where = f"this process's CPU {time.process_time() - cpu:.2f} s, its backend's {_backend_cpu(backend)}"
    print(f"   SPEC rule, {rounds} interleaved rounds: {where}; load {_load()}")
    if verbose:
        print(f"  same matches: {phase.same} ({phase.matches:,} matches)")
        for stat, pick in (("median", statistics.median), ("best", min)):
            ratios = ", ".join(
                f"{name} {pick(phase.times[name]) * 1000:.0f} ms = {phase.ratio(name, pick):.2f}×"
                for name in ("batch_outcomes", "matching_ids")
            )
            hand = pick(phase.times["hand-written"])
            print(f"  {stat} of {rounds}: hand-written {hand * 1000:.0f} ms; {ratios}")
    return phase


def _clear_evaluations() -> None:
    """Back to 'no prior state': no decisions, subject states, escalations or outbox rows (the audit
    chain is append-only and keeps its entries).

    The escalation event log refuses TRUNCATE outside test databases (a statement trigger); this is the
    bench's own database, so its session skips user triggers for the statement (superuser only)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "TRUNCATE rules_decision, rules_subjectstate, rules_evaluationrun, rules_contextsnapshot, "
            "escalations_escalation, "
            "escalations_escalationevent, escalations_delivery, escalations_digestitem, "
            "escalations_suppressednotification CASCADE"
        )


def _backend_cpu(since: tuple[int, float] | None = None) -> Any:
    """The CPU seconds (user + system) of this process's PostgreSQL backend from ``/proc``, when the
    server runs on this machine: with ``since`` (an earlier reading), the difference as text ("n/a"
    when it cannot be read). The full run's second connection (snapshots) is not counted."""
    from bench.common import backend_pid, process_cpu

    pid = backend_pid()
    seconds = process_cpu(pid)
    if since is None:
        return pid, seconds
    if seconds is None or since[1] is None or since[0] != pid:
        return "n/a"
    return f"{seconds - since[1]:.2f} s"


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


PROFILED = (
    "services.py:{}(evaluate_subjects)",
    "facts.py:{}(compute_contexts)",
    "evaluator.py:{}(evaluate)",
    "base.py:{}(__init__)",
    "query.py:{}(bulk_create)",
    "array.py:{}(dump)",
    "services.py:{}(_queue_actions)",
    "services.py:{}(escalation_auto_resolve)",
    "services.py:{}(audit_record_many)",
    "services.py:{}(audit_append_many)",
    "query.py:{}(__iter__)",
    "runs.py:{}(*)",
    "sql.py:{}(outcome_sets_many)",
    "pipeline.py:{}(batch_run)",
    "services.py:{}(audit_record)",
    "services.py:{}(_event)",
    "__init__.py:{}(targets_for)",
    "refire.py:{}(refires_*)",
    "bulk.py:{}(copy_insert)",
    "opening.py:{}(*)",
    "noise.py:{}(notify*)",
    "policies.py:{}(policy_*)",
    "evaluator.py:{}(to_json)",
    "evaluator.py:{}(summary)",
    "facts.py:{}(snapshot)",
    "encoder.py:{}(encode)",
    "tasks.py:{}(<lambda>)",
    "task.py:{}(delay)",
)


def profile_full_run(evaluate_subjects: Callable[..., Any], label: str = "warm", top: int = 0) -> None:
    """Where a full run spends its time: cumulative seconds of the main suspects (profiled: slower)."""
    import fnmatch

    profiler = cProfile.Profile()
    profiler.enable()
    started = time.perf_counter()
    evaluate_subjects(subject_type="change_order", trigger="schedule")
    seconds = time.perf_counter() - started
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    print(f"   profile of a {label} run, {seconds:.1f} s under the profiler:")
    rows = []
    for (path, number, name), (_cc, calls, _tt, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = f"{Path(path).name}:{number}({name})"
        if any(fnmatch.fnmatch(label, pattern.format("*")) for pattern in PROFILED):
            rows.append((cumulative, calls, label))
    for cumulative, calls, name in sorted(rows, reverse=True):
        if cumulative >= 0.05:
            print(f"     {cumulative:8.2f} s {calls:9,d} calls  {name}")
    if top:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top * 2)
        print(out.getvalue())


if __name__ == "__main__":
    main()
