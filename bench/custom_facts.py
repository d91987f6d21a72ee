"""Operator-defined facts at scale, as a report (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/custom_facts.py

Drops and recreates ``fulcrum_bench_custom`` on the server of ``DATABASE_URL``, fills it as
``bench/evaluate.py`` does (2,000 clients, 10,000 projects, 100,000 change orders with their invoices,
bills and milestones), defines custom facts on change orders that mirror built-in ones (change orders
and their total in the last 30 days, income, cost, cost as a share of income, missed milestones), and
imports two sets of 50 rules of the same shapes and thresholds: one reading the built-in facts, one
reading the custom facts (including a fact-vs-fact condition in each). It then times, for each set:

1. the SQL batch phase: ``sql.batch_outcomes_many`` — facts and all 50 rules in one query;
2. the facts for every change order (``compute_contexts``);
3. the full ``evaluate_subjects`` run, the other set disabled: cold for its rules (no state of theirs yet;
   the built-in set's decisions and escalations stay, since the event log refuses TRUNCATE);

and reports custom / built-in for each. Target (issue 17): ≤ 1.5×. Both sets must decide the same
subjects (the custom facts mean the same as the built-in ones): the report says whether they do.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "fulcrum_bench_custom"
RATIO_TARGET = 1.5

# The custom facts: each mirrors a built-in fact the built-in rules read (same meaning, same values,
# except cost_share = 100 − margin_pct).
CUSTOM_FACTS: list[dict[str, Any]] = [
    {"key": "co_count_30d", "type": "int", "unit": "count", "kind": "aggregate", "related": "change_orders",
     "function": "count", "window": "30d"},
    {"key": "co_amount_30d", "type": "money", "unit": "USD", "kind": "aggregate", "related": "change_orders",
     "function": "sum", "field": "amount", "window": "30d"},
    {"key": "income", "type": "money", "unit": "USD", "kind": "aggregate", "related": "financial_lines",
     "function": "sum", "field": "amount", "filters": [{"field": "kind", "op": "eq", "value": "invoice"}]},
    {"key": "cost", "type": "money", "unit": "USD", "kind": "aggregate", "related": "financial_lines",
     "function": "sum", "field": "amount",
     "filters": [{"field": "kind", "op": "in", "value": ["bill", "purchase"]}]},
    {"key": "cost_share", "type": "percent", "unit": "%", "kind": "ratio", "a": "custom.cost",
     "b": "custom.income"},
    {"key": "open_milestones", "type": "int", "unit": "count", "kind": "aggregate", "related": "milestones",
     "function": "count", "filters": [{"field": "completed", "op": "is", "value": False}]},
]  # fmt: skip

# (built-in condition, custom condition) with {placeholders} for thresholds.
SHAPES = [
    (
        "      - {{fact: project.change_orders_30d, op: gte, value: {k}}}\n"
        "      - {{fact: project.margin_pct, op: lt, value: {m}}}\n",
        "      - {{fact: custom.co_count_30d, op: gte, value: {k}}}\n"
        "      - {{fact: custom.cost_share, op: gt, value: {c}}}\n",
    ),
    (
        "      - {{fact: project.change_order_amount_30d, op: gte, value: {a}}}\n"
        "      - {{fact: project.cost_to_date, op: gt, other: project.income_to_date}}\n",
        "      - {{fact: custom.co_amount_30d, op: gte, value: {a}}}\n"
        "      - {{fact: custom.cost, op: gt, other: custom.income}}\n"
        # project.income_to_date is null without invoices, custom.income (a sum) is 0: the same subjects.
        "      - {{fact: custom.income, op: gt, value: 0}}\n",
    ),
    (
        "      - {{fact: project.income_to_date, op: gte, value: {a}}}\n"
        "      - {{fact: project.change_orders_30d, op: gte, value: {k}}}\n",
        "      - {{fact: custom.income, op: gte, value: {a}}}\n"
        "      - {{fact: custom.co_count_30d, op: gte, value: {k}}}\n",
    ),
]


def rules(custom: bool, n: int) -> str:
    rng = random.Random(17)
    out = []
    for i in range(n):
        builtin_when, custom_when = SHAPES[i % len(SHAPES)]
        m = rng.choice([0, 5, 8])
        values = {"k": rng.choice([2, 3]), "m": m, "c": 100 - m, "a": rng.choice([100000, 150000, 400000])}
        when = (custom_when if custom else builtin_when).format(**values)
        prefix = "custom" if custom else "builtin"
        out.append(
            f"- key: {prefix}-{i:02d}\n  name: {prefix} {i}\n  subject: change_order\n  when:\n    all:\n"
            f"      - {{fact: change_order.amount, op: gte, value: 50000}}\n"
            f"      - {{fact: change_order.status, op: eq, value: pending}}\n{when}"
            f"  route: standard\n  severity: medium\n  priority: {100 + i}\n  actions: [flag_dashboard]\n"
            "  max_fact_age: 24h\n"
        )
    return "".join(out)


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--change-orders", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2_000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query timing (median)")
    parser.add_argument("--no-full-run", action="store_true", help="skip the evaluate_subjects runs")
    parser.add_argument("--interleave", type=int, default=3, help="rounds of alternating timings (0: none)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from bench.common import fresh_django_database

    print(f"load average before: {_load()}")
    fresh_django_database(BENCH_DB)
    from bench.evaluate import fill, timed

    fill(args.clients, args.projects, args.change_orders)

    from django.db import connection
    from django.utils import timezone

    from apps.rules.evaluation.custom import custom_fact_save
    from apps.rules.evaluation.facts import compute_contexts
    from apps.rules.evaluation.services import evaluate_subjects, live_versions, rules_import
    from apps.rules.evaluation.sql import batch_outcomes_many
    from apps.rules.models import Rule

    n = args.change_orders
    results: dict[str, dict[str, float]] = {"built-in": {}, "custom": {}}
    outcomes: dict[str, list[dict[int, str]]] = {}
    # The built-in set runs before any custom fact exists (its contexts carry none); then the custom
    # facts are saved and the custom set replaces it.
    for name in ("built-in", "custom"):
        if name == "custom":
            for spec in CUSTOM_FACTS:
                custom_fact_save(
                    spec={"subject": "change_order", "description": "", **spec}, actor="system:bench"
                )
            Rule.objects.update(enabled=False)
        rules_import(text=rules(name == "custom", args.rules), actor="system:bench")
        chosen = live_versions("change_order")
        assert len(chosen) == args.rules and all(
            v.rule.key.startswith(name.replace("built-in", "builtin")) for v in chosen
        )
        now = timezone.now()
        print(f"\n{name}: {os.cpu_count()} cores; {n:,} change orders; {len(chosen)} rules; load {_load()}")
        seconds, outcomes[name] = timed(
            lambda c=chosen, t=now: batch_outcomes_many(c, "change_order", now=t), args.repeat
        )
        results[name]["sql"] = seconds
        print(
            f"  SQL batch: facts + {len(chosen)} rules in one query      {seconds:7.2f} s  (load {_load()})"
        )
        seconds, count = timed(
            lambda t=now: sum(1 for _ in compute_contexts("change_order", now=t)), args.repeat
        )
        results[name]["facts"] = seconds
        print(f"  compute_contexts, every change order ({count:,})  {seconds:7.2f} s  (load {_load()})")
        if not args.no_full_run:
            # Each run stores the context of every subject that has none yet: clear them, so that both
            # runs pay for it (the first would otherwise pay alone).
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM rules_contextsnapshot")
            started = time.perf_counter()
            report = evaluate_subjects(subject_type="change_order", trigger="schedule")
            results[name]["full"] = time.perf_counter() - started
            full = results[name]["full"]
            print(f"  evaluate_subjects, cold for these rules        {full:7.2f} s  (load {_load()})")
            print(f"     {report}")
    same = [
        sorted(k for k, v in a.items() if v == "matched") == sorted(k for k, v in b.items() if v == "matched")
        for a, b in zip(outcomes["built-in"], outcomes["custom"], strict=True)
    ]
    matched = sum(1 for o in outcomes["custom"] for v in o.values() if v == "matched")
    print(
        f"\nthe two sets match the same subjects, rule by rule: {sum(same)}/{len(same)} ({matched:,} matches)"
    )

    if args.interleave:
        # The machine's load moves by the minute: time the two sets in alternation, round by round, so
        # that each ratio compares runs made under the same load. The built-in set's query holds no
        # custom fact (a batch computes only what its rules read); its contexts are computed with the
        # custom facts uninstalled.
        from apps.rules.engine import customfacts as cf
        from apps.rules.evaluation.custom import installed

        Rule.objects.update(enabled=True)
        versions = live_versions("change_order")
        sets = {
            "built-in": [v for v in versions if v.rule.key.startswith("builtin-")],
            "custom": [v for v in versions if v.rule.key.startswith("custom-")],
        }
        defs = installed()
        rounds: dict[str, dict[str, list[float]]] = {k: {"sql": [], "facts": []} for k in sets}
        print(f"\ninterleaved, {args.interleave} rounds (load {_load()})")
        for r in range(args.interleave):
            now = timezone.now()
            for name, chosen in sets.items():
                cf.install(defs)
                seconds, _ = timed(lambda c=chosen, t=now: batch_outcomes_many(c, "change_order", now=t))
                rounds[name]["sql"].append(seconds)
                cf.install(defs if name == "custom" else {})
                seconds, _ = timed(
                    lambda t=now: sum(
                        1 for _ in compute_contexts("change_order", now=t, refresh_custom=False)
                    )
                )
                rounds[name]["facts"].append(seconds)
            cf.install(defs)
            c, b = rounds["custom"], rounds["built-in"]
            print(
                f"  round {r + 1}: SQL {c['sql'][-1]:.2f} / {b['sql'][-1]:.2f} s, "
                f"facts {c['facts'][-1]:.2f} / {b['facts'][-1]:.2f} s (load {_load()})"
            )
        for phase in ("sql", "facts"):
            ratios = [c / b for c, b in zip(rounds["custom"][phase], rounds["built-in"][phase], strict=True)]
            ratio = statistics.median(ratios)
            verdict = "OK" if ratio <= RATIO_TARGET else "MISSED"
            print(
                f"  interleaved {phase}: median of round ratios {ratio:.2f}× "
                f"({', '.join(f'{x:.2f}' for x in ratios)})  {verdict}"
            )

    print(f"\ncustom / built-in, sequential (target ≤ {RATIO_TARGET}×), load average now {_load()}")
    for phase in ("sql", "facts", "full"):
        if phase in results["custom"]:
            ratio = results["custom"][phase] / results["built-in"][phase]
            verdict = "OK" if ratio <= RATIO_TARGET else "MISSED"
            print(
                f"  {phase:>6}: {results['custom'][phase]:.2f} s / {results['built-in'][phase]:.2f} s = "
                f"{ratio:.2f}×  {verdict}"
            )


if __name__ == "__main__":
    main()
