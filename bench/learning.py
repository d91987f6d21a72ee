"""The learning loop's costs and its threshold finding at scale, as a report (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/learning.py [--subjects 20000]

Drops and recreates the database ``fulcrum_bench_learning`` on the server of ``DATABASE_URL`` (the named
database itself is never touched), migrates it, and builds a synthetic company: N projects with a
margin uniform in 0–40 %, each with an old and a recent decision context; the live rule flags margin
< 25 % (and contract ≥ 100k, always true); flagged projects are labelled ``actioned`` iff margin < 15 %
with 3 % of labels flipped, with random acknowledge/resolve times. Then it times

(a) the threshold sweep (``suggestions_generate``) and reports the suggestion, next to a backtest of
    the suggested version (the two must agree);
(b) rule analytics (four aggregate queries) and rules-fired-together;
(c) fitting the risk model on every labelled escalation;
(d) retention: pruning the old payloads (half of all decisions).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "fulcrum_bench_learning"
BATCH = 5_000
T = TypeVar("T")


def _setup() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.common import fresh_django_database

    fresh_django_database(BENCH_DB)


def _build(subjects: int, seed: int) -> None:
    from django.utils import timezone

    from apps.escalations.models import Escalation
    from apps.learning.models import LearningSettings
    from apps.learning.tests.builders import decision, escalation, publish, snapshot
    from apps.rules.models import Decision

    settings = LearningSettings.load()
    settings.miss_cost = settings.false_alarm_cost = Decimal(1)
    settings.retention_days = 90
    settings.save()
    version = publish(
        "thin-margin",
        {
            "all": [
                {"fact": "project.margin_pct", "op": "lt", "value": 25},
                {"fact": "project.contract_value", "op": "gte", "value": 100000},
            ]
        },
    )
    rng = random.Random(seed)
    now = timezone.now()
    decisions: list[Decision] = []
    escalations: list[Escalation] = []
    started = time.perf_counter()
    for sid in range(1, subjects + 1):
        margin = round(rng.uniform(0, 40), 4)
        matched = margin < 25
        outcome = "matched" if matched else "not_matched"
        facts = snapshot(project__margin_pct=str(margin), project__contract_value="250000.00")
        decisions.append(
            decision(version, sid, outcome=outcome, at=now - dt.timedelta(days=200), facts=facts)
        )
        decisions.append(decision(version, sid, outcome=outcome, at=now - dt.timedelta(days=1), facts=facts))
        if matched:
            truth = (margin < 15) != (rng.random() < 0.03)
            opened = now - dt.timedelta(days=rng.uniform(2, 150))
            escalations.append(
                escalation(
                    version,
                    sid,
                    opened=opened,
                    ack_after=dt.timedelta(hours=rng.lognormvariate(1, 1)),
                    closed_after=dt.timedelta(hours=rng.lognormvariate(3, 1)),
                    outcome="actioned" if truth else "false_alarm",
                    route=rng.choice(["executive", "standard"]),
                    facts=facts,
                )
            )
        if len(decisions) >= BATCH:
            Decision.objects.bulk_create(decisions)
            decisions = []
    Decision.objects.bulk_create(decisions)
    for i in range(0, len(escalations), BATCH):
        Escalation.objects.bulk_create(escalations[i : i + BATCH])
    print(
        f"built {subjects:,} projects, {2 * subjects:,} decisions, {len(escalations):,} labelled escalations "
        f"in {time.perf_counter() - started:.1f} s"
    )


def _timed(label: str, fn: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = fn()
    print(f"{label}: {time.perf_counter() - started:.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    _setup()
    from django.db import connection

    from apps.learning.analytics import rule_analytics, rules_fired_together
    from apps.learning.ranking import risk_model_train
    from apps.learning.retention import decisions_prune
    from apps.learning.thresholds import suggestions_generate, with_threshold
    from apps.rules.engine.ruleset import rule_from_dict
    from apps.rules.evaluation.backtest import backtest
    from apps.rules.models import Rule

    _build(args.subjects, args.seed)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    rule = Rule.objects.select_related("live_version").get(key="thin-margin")

    made = _timed("(a) threshold sweep (suggestions_generate)", lambda: suggestions_generate(rule=rule))
    for s in made:
        print(
            f"    {s.fact} {s.op} {s.current_value} → {s.proposed_value}: matches {s.current['matches']} → "
            f"{s.proposed['matches']}, precision {s.current['precision']:.3f} → "
            f"{s.proposed['precision']:.3f}, "
            f"expected cost {s.current['expected_cost']:g} → {s.proposed['expected_cost']:g}"
        )
    if made:
        spec = dict(rule.live_version.spec)  # type: ignore[union-attr]
        spec["when"] = with_threshold(spec["when"], made[0].path, made[0].proposed_value)
        result = _timed(
            "    backtest of the suggested version", lambda: backtest(rule.key, draft=rule_from_dict(spec))
        )
        agree = (
            result.matches == made[0].proposed["matches"]
            and result.precision.positive == made[0].proposed["positive"]
            and result.newly_matching_count == made[0].newly_matching
            and result.no_longer_matching_count == made[0].no_longer_matching
        )
        print(f"    backtest: matches {result.matches}, precision {result.precision}; agrees: {agree}")

    stats = _timed("(b) rule analytics", lambda: rule_analytics())
    for v in stats:
        print(
            f"    {v.key}: fires {v.fires:,}, subjects {v.subjects:,}, precision {v.precision or 0:.3f}, "
            f"ack p50/p90 {(v.acknowledge.p50 or 0) / 3600:.1f}/{(v.acknowledge.p90 or 0) / 3600:.1f} h"
        )
    _timed("    rules fired together (24 h)", lambda: rules_fired_together(window=dt.timedelta(hours=24)))
    model = _timed("(c) risk model fit", lambda: risk_model_train(force=True))
    if model:
        print(f"    v{model.version}, n={model.n_samples:,}, metrics {model.metrics}")
    pruned = _timed("(d) retention prune", decisions_prune)
    print(f"    {pruned:,} payloads pruned")


if __name__ == "__main__":
    main()
