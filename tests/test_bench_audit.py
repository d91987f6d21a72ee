"""``bench/audit.py`` writes decisions the way the rules service does (its reference is that path): a
change to the service's COPY that the bench does not follow breaks here, not in the next bench run."""

from __future__ import annotations

import re

import pytest

from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify
from apps.rules.models import Decision
from bench.audit import BATCH, bench_writes

pytestmark = pytest.mark.django_db


def test_the_audit_bench_writes_decisions_and_a_chain_that_verifies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench_writes(n=40, rounds=2)  # its ratio is a timing: reported by the bench, not tested

    # Where a batch's time goes is printed, each step timed: seven figures, none left at zero but the
    # backend's CPU (read in clock ticks, it may be 0 over so few rows).
    (steps,) = [line for line in capsys.readouterr().out.splitlines() if "wall a batch" in line]
    figures = [float(f) for f in re.findall(r"\d+\.\d+", steps)]
    assert len(figures) == 7 and all(figures[:3] + figures[4:]), steps

    written = 2 * BATCH + 2 * 2 * 40  # the warm-up, then each round's plain and audited sides
    assert Decision.objects.count() == written
    assert Decision.objects.filter(outcome="matched", facts__isnull=False).count() == written
    assert AuditEntry.objects.filter(action="decision.matched").count() == 2 * BATCH + 2 * 40
    assert audit_verify().ok
    # Each entry audits its own decision: the facts it holds are the decision row's, as the service writes.
    entry = AuditEntry.objects.filter(action="decision.matched").latest("id")
    decision = Decision.objects.get(pk=entry.object_id)
    assert entry.data["facts"] == decision.facts and decision.facts
    assert entry.data["subject"] == f"{decision.subject_type}:{decision.subject_id}"
