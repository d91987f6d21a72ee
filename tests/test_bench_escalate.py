"""``bench.escalate --compare`` judges more email worker processes by the mean of their bursts, run in ABBA
order: a single pair run in a fixed order gave the later burst (always the larger side) the earlier one's
rows, dead tuples and spent vendor budgets."""

from __future__ import annotations

from bench.escalate import compare_report


def _burst(p95: float, span: float) -> dict[str, float]:
    return {"p95": p95, "email_span": span, "emails": 400.0}


def test_the_sides_are_judged_by_the_means_of_their_bursts() -> None:
    # The larger side loses one pair (1.30 vs 1.20) and wins on the means (1.15 vs 1.225).
    line = compare_report(
        [(1, _burst(1.20, 1.0)), (2, _burst(1.30, 1.1)), (2, _burst(1.00, 0.8)), (1, _burst(1.25, 1.0))]
    )
    assert line.startswith("2 vs 1 email worker processes (ABBA, means of 2 and 2 bursts)")
    assert "p95 1.150 s vs 1.225 s (0.94×; bursts 1.300, 1.000 vs 1.200, 1.250)" in line
    assert "emails span 0.95 s vs 1.00 s (0.95×)" in line
    assert line.endswith(": faster")


def test_more_processes_no_faster_on_the_means_is_reported() -> None:
    line = compare_report(
        [(2, _burst(1.10, 1.0)), (4, _burst(1.00, 0.9)), (4, _burst(1.30, 1.1)), (2, _burst(1.12, 1.0))]
    )
    assert line.startswith("4 vs 2 email worker processes (ABBA")
    assert "p95 1.150 s vs 1.110 s (1.04×" in line
    assert line.endswith(": NOT faster")
