"""Audit trail costs, as a report (not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1/fulcrum_dev CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/audit.py

Drops and recreates the database ``fulcrum_bench_audit`` on the server of ``DATABASE_URL`` (the named
database itself is never touched), migrates it, then measures

(a) decision-write overhead against the product's own decision write path: N matched decisions written
    as the rules service writes them (ids reserved in one statement, facts and trace encoded to JSON, one
    ``COPY rules_decision`` per batch of 500, each batch in its own transaction), alone vs. together with
    one chained audit entry per decision (``audit_append_many`` per batch, the payload the rules service
    records for a match, its facts spliced in as the decision row's canonical JSON text); the facts and
    trace are the product's own (``Payloads``: 20 facts, 2.1 KB; the SPEC rule's trace, 1.3 KB, as a real
    decision row holds); target ≤ 1.3×;
(b) ``audit_verify`` over 200,000 entries; target ≥ 50,000 entries/s.

Prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apps.audit.services import RawJSON
    from apps.rules.models import RuleVersion

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "fulcrum_bench_audit"
BATCH = 500
WRITE_TARGET = 1.3
# A batch's steps, timed apart (the server's CPU read from /proc in clock ticks: summed over the batches).
STEPS = ("decisions", "chain", "chain, its backend's CPU", "chain, this process's CPU", "commit")
VERIFY_TARGET = 50_000


def _setup(database: str = BENCH_DB) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.common import fresh_django_database

    fresh_django_database(database)


# The SPEC rule (the demo's rules file): its trace is the explanation every decision of the bench carries.
SPEC_RULES = ROOT / "config" / "demo" / "rules.yaml"
SPEC_RULE = "co-exec-review"


class Payloads:
    """What the rules service writes for a matched change order, made by the product's own code.

    ``facts(subject_id)``: the subject's context as ``Context.snapshot_json`` writes it into the decision
    row (and, as is, into its audit entry): every catalogue fact a change order's rules can read, with its
    age, source, unit and type (the amount varies with the subject). ``trace``: the SPEC rule's
    ``Evaluation.to_json()`` on that context (the explanation, made once: its wording is the same work
    with or without the audit chain, so leaving it out of both sides only makes the ratio stricter).
    """

    def __init__(self) -> None:
        import datetime as dt
        from decimal import Decimal

        import yaml

        from apps.rules.engine.catalogue import FactType, facts_for
        from apps.rules.engine.evaluator import compile_condition

        sample: dict[FactType, object] = {
            FactType.MONEY: Decimal("1262500.00"),
            FactType.PERCENT: Decimal("9.40"),
            FactType.INT: 41,
            FactType.TEXT: "pending",
            FactType.BOOL: True,
            FactType.DATE: dt.date(2026, 11, 30),
            FactType.SCORE: Decimal("0.93"),
        }
        self.values = {fact.name: sample[fact.type] for fact in facts_for("change_order")}
        self.values["change_order.amount"] = Decimal("61250.00")
        self.ages: dict[str, float | None] = {name: 812.0 for name in self.values}
        (when,) = [
            rule["when"] for rule in yaml.safe_load(SPEC_RULES.read_text()) if rule["key"] == SPEC_RULE
        ]
        evaluation = compile_condition(when, "change_order").evaluate(self.values, ages=self.ages)
        assert evaluation.matched, "the sample context must match the SPEC rule"
        self.trace = evaluation.to_json()

    def facts(self, subject_id: int) -> RawJSON:
        from decimal import Decimal

        from apps.rules.evaluation.facts import Context

        values = {**self.values, "change_order.amount": Decimal(50_000 + subject_id % 90_000)}
        return Context("change_order", subject_id, values, self.ages).snapshot_json()


def _server_cpu(pid: int) -> float:
    """CPU seconds the PostgreSQL backend ``pid`` has used so far, 0 when it cannot be read (the server
    runs elsewhere: client CPU only)."""
    from bench.common import process_cpu

    return process_cpu(pid) or 0.0


def _cpu(pid: int) -> float:
    """CPU seconds used so far by this process plus its PostgreSQL backend ``pid`` (when on this machine).

    Other sessions on a shared box stretch wall-clock times; CPU spent is much steadier.
    """
    return time.process_time() + _server_cpu(pid)


def _write(
    version: RuleVersion, payloads: Payloads, n: int, *, audited: bool, offset: int
) -> tuple[float, float, float, dict[str, float]]:
    """Seconds, CPU seconds (this process and its backend), this process's CPU seconds and the seconds of
    each step (the decisions' COPY, the chain's append, the commit; summed over the batches) to write
    ``n`` matched decisions the way the rules service writes them (and their audit entries); the subjects
    are chosen beforehand, the JSON is encoded inside the timing as the service does while it streams the
    COPY."""
    from django.db import connection, transaction
    from django.utils import timezone

    from apps.audit.services import audit_append_many
    from apps.bulk import reserve_ids
    from apps.rules.evaluation.services import decisions_copy, explanation_jsonb, jsonb_text
    from bench.common import backend_pid

    summary = payloads.trace["summary"]
    batches = [[(offset + i, summary) for i in range(s, min(s + BATCH, n))] for s in range(0, n, BATCH)]
    now = timezone.now()
    steps = dict.fromkeys(STEPS, 0.0)
    clock = time.perf_counter
    pid = backend_pid()
    cpu, client = _cpu(pid), time.process_time()
    started = clock()
    for batch in batches:
        begun = clock()
        with transaction.atomic():
            ids = reserve_ids("rules_decision", len(batch))
            facts: list[RawJSON] = []
            with connection.cursor() as cursor, decisions_copy(cursor) as copy:
                for pk, (subject_id, summary) in zip(ids, batch, strict=True):
                    facts.append(payloads.facts(subject_id))
                    copy.write_row(
                        (pk, version.pk, "change_order", subject_id, "matched", "sync", now,
                         jsonb_text(facts[-1]), explanation_jsonb(payloads.trace), summary, "", None)
                    )  # fmt: skip
            copied = clock()
            steps["decisions"] += copied - begun
            if audited:
                # CPU read around the chain's step only (a /proc read is ~20 µs): the reference, decisions
                # alone, runs nothing but the product's path.
                server, mine = _server_cpu(pid), time.process_time()
                appending = clock()
                audit_append_many(
                    [
                        {
                            "action": "decision.matched",
                            "object_type": "decision",
                            "object_id": pk,
                            "data": {
                                "rule": "co-exec-review",
                                "version": 1,
                                "subject": f"change_order:{subject_id}",
                                "summary": summary,
                                "facts": text,
                                "suppressed": "",
                                "trigger": "sync",
                            },
                        }
                        for pk, (subject_id, summary), text in zip(ids, batch, facts, strict=True)
                    ],
                    actor="system:rules",
                )
                steps["chain"] += clock() - appending
                steps["chain, its backend's CPU"] += _server_cpu(pid) - server
                steps["chain, this process's CPU"] += time.process_time() - mine
            committing = clock()
        steps["commit"] += clock() - committing
    return clock() - started, _cpu(pid) - cpu, time.process_time() - client, steps


def bench_writes(n: int, rounds: int) -> float:
    from django.utils import timezone

    from apps.rules.models import Rule, RuleVersion

    spec = {
        "key": "co-exec-review",
        "name": "Change order needs executive judgment",
        "subject": "change_order",
    }
    rule = Rule.objects.create(
        key="co-exec-review", name=spec["name"], subject_type="change_order", draft=spec
    )
    version = RuleVersion.objects.create(
        rule=rule, number=1, spec=spec, spec_hash="0" * 64, published_at=timezone.now()
    )
    payloads = Payloads()
    _write(version, payloads, 2 * BATCH, audited=True, offset=10**8)  # warm the connection and caches
    plain: list[float] = []
    audited: list[float] = []
    cpu: dict[bool, list[float]] = {False: [], True: []}
    client: dict[bool, list[float]] = {False: [], True: []}
    steps: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for r in range(rounds):
        # Alternate so that table growth and server caches weigh on both sides alike.
        for mode in (False, True) if r % 2 == 0 else (True, False):
            seconds, cpu_seconds, client_seconds, mode_steps = _write(
                version, payloads, n, audited=mode, offset=(2 * r + mode) * n
            )
            (audited if mode else plain).append(seconds)
            cpu[mode].append(cpu_seconds)
            client[mode].append(client_seconds)
            steps[mode].append(mode_steps)
    p, a = statistics.median(plain), statistics.median(audited)
    ratio = a / p
    # Each round's pair ran back to back, so its ratio is the one least disturbed by other load.
    paired = statistics.median(x / y for x, y in zip(audited, plain, strict=True))
    print(f"\n(a) decision writes, N={n:,} in batches of {BATCH}, median of {rounds} rounds")
    print("    reference: decisions only, the rules service's COPY path")
    print(f"    decisions only            {n / p:10,.0f} rows/s   ({p:.2f} s; rounds {_fmt(plain)})")
    print(f"    decisions + audit chain   {n / a:10,.0f} rows/s   ({a:.2f} s; rounds {_fmt(audited)})")
    print(
        f"    ratio {ratio:.3f}× of the medians, {paired:.3f}× median of the per-round ratios   "
        f"target ≤ {WRITE_TARGET}×   {'OK' if ratio <= WRITE_TARGET else 'MISSED'}"
    )
    cp, ca = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(
        f"    CPU (client + its PostgreSQL backend): {cp / n * 1e6:.0f} vs {ca / n * 1e6:.0f} µs/decision, "
        f"ratio {ca / cp:.2f}×"
    )
    kp, ka = statistics.median(client[False]), statistics.median(client[True])
    print(
        f"    of which this process: {kp / n * 1e6:.0f} vs {ka / n * 1e6:.0f} µs/decision; its backend: "
        f"{(cp - kp) / n * 1e6:.0f} vs {(ca - ka) / n * 1e6:.0f} µs/decision (medians of each)"
    )
    batches = -(-n // BATCH)
    each = {
        mode: {step: statistics.median(r[step] for r in steps[mode]) / batches * 1e3 for step in STEPS}
        for mode in (False, True)
    }
    print(
        f"    wall a batch of {BATCH} (medians): the decisions' COPY {each[False]['decisions']:.2f} vs "
        f"{each[True]['decisions']:.2f} ms; the chain's append {each[True]['chain']:.2f} ms (CPU: its "
        f"backend's {each[True][STEPS[2]]:.2f} ms, this process's {each[True][STEPS[3]]:.2f} ms); the commit "
        f"{each[False]['commit']:.2f} vs {each[True]['commit']:.2f} ms"
    )
    return ratio


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _fill_chain(total: int) -> None:
    from apps.audit.models import AuditEntry
    from apps.audit.services import audit_record_many

    payloads = Payloads()

    have = AuditEntry.objects.count()
    started = time.perf_counter()
    while have < total:
        n = min(5000, total - have)
        audit_record_many(
            [
                {
                    "action": "decision.matched",
                    "object_type": "decision",
                    "object_id": have + i,
                    "data": {
                        "rule": "co-exec-review",
                        "version": 1,
                        "subject": f"change_order:{have + i}",
                        "summary": payloads.trace["summary"],
                        "facts": payloads.facts(have + i),
                        "suppressed": "",
                        "trigger": "schedule",
                    },
                }
                for i in range(n)
            ],
            actor="system:rules",
        )
        have += n
    print(f"\nchain filled to {total:,} entries in {time.perf_counter() - started:.1f} s")


def _timed(label: str, run: Callable[[], object], count: int, target: float | None = None) -> float:
    from bench.common import backend_pid

    pid = backend_pid()
    server = _server_cpu(pid)
    client = time.process_time()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    client = time.process_time() - client
    server = _server_cpu(pid) - server
    rate = count / seconds
    verdict = (
        "" if target is None else f"   target ≥ {target:,.0f}/s   {'OK' if rate >= target else 'MISSED'}"
    )
    ok = getattr(result, "ok", result)
    print(
        f"    {label:<26}{rate:9,.0f} entries/s ({seconds:.2f} s; CPU µs/entry: "
        f"{client / count * 1e6:.1f} here, {server / count * 1e6:.1f} server) ok={ok}{verdict}"
    )
    return rate


def bench_verify(total: int, repeats: int) -> float:
    import tempfile

    from django.db import connection

    from apps.audit.services import audit_verify

    _fill_chain(total)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_auditentry")
    print(f"(b) audit_verify over {total:,} entries, {repeats} runs")
    rates = [_timed("audit_verify", audit_verify, total, VERIFY_TARGET) for _ in range(repeats)]
    try:
        from apps.audit.anchor import anchor_write, audit_verify_with_anchor
    except ImportError:
        return statistics.median(rates)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "anchor.log"
        anchor_write(path=path)
        _timed("audit_verify_with_anchor", lambda: audit_verify_with_anchor(path=path), total)
    return statistics.median(rates)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20_000, help="decisions per write run (default 20,000)")
    parser.add_argument("--rounds", type=int, default=5, help="write runs per mode (default 5)")
    parser.add_argument("--verify-entries", type=int, default=200_000)
    parser.add_argument("--verify-runs", type=int, default=3)
    parser.add_argument(
        "--database",
        default=BENCH_DB,
        help=f"the database to drop, create and fill (default {BENCH_DB}): a distinct one keeps runs apart",
    )
    args = parser.parse_args()
    print(f"load average before: {_load()} ({os.cpu_count()} CPUs)")
    _setup(args.database)
    ratio = bench_writes(args.n, args.rounds)
    rate = bench_verify(args.verify_entries, args.verify_runs)
    print(
        f"\nsummary: write ratio {ratio:.3f}× (target ≤ {WRITE_TARGET}×), "
        f"verify {rate:,.0f} entries/s (target ≥ {VERIFY_TARGET:,}/s); "
        f"load average after: {_load()}"
    )


if __name__ == "__main__":
    main()
