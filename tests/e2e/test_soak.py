"""The soak, shortened (issue 19): gunicorn, beat and 3 workers against the simulator under injected faults
(upstream 500/429 bursts, SMTP flapping, a worker SIGKILLed every 20 s, webhook bursts with duplicates);
nothing lost or duplicated, no pending evaluation stuck, verify_audit passes. ``bench/soak.py`` runs it for
10 minutes and prints the latencies (docs/PERFORMANCE.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.soak]

ROOT = Path(__file__).resolve().parents[2]


SHORT = ("--minutes", "1", "--kill-every", "20", "--drain", "480")


def test_a_short_soak_loses_and_duplicates_nothing(tmp_path):
    # A process of its own: the soak makes its own database and its own Django setup.
    result = subprocess.run(
        # A database of its own: a bench soak running beside the suite drops and recreates its default.
        [sys.executable, "-m", "bench.soak", *SHORT, "--database", "fulcrum_test_soak"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    print(result.stdout[-6000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "soak: PASSED" in result.stdout
