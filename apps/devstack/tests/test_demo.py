"""The demo orchestrator's choices that tests can check without starting the whole stack."""

from __future__ import annotations

import datetime as dt

import time_machine

from apps.devstack.demo import company_today
from apps.rules.evaluation.facts import evaluation_date


def test_the_simulator_is_given_the_day_the_facts_count_in():
    # TIME_ZONE defaults to America/Chicago, where 02:00 UTC on the 24th is still the 23rd: the planted
    # "renewal in 60 days" must be planted from the 23rd, or it is 61 days away when the rules look.
    with time_machine.travel(dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC), tick=False):
        assert company_today() == "2026-11-23" == evaluation_date(dt.datetime.now(dt.UTC)).isoformat()


# --- a demo that stays true across restarts ---------------------------------------------------------

DIGEST = """
import dataclasses, hashlib, json, sys
from datetime import date, datetime
from apps.simulator.generator import generate_company

company = generate_company(42, 0.1, date.fromisoformat(sys.argv[1]), datetime.fromisoformat(sys.argv[2]))
digest = hashlib.sha256()
for (system, kind), table in sorted(company.tables.items()):
    for record_id in sorted(table, key=str):
        record = dataclasses.asdict(table[record_id])
        row = [system, kind, str(record_id), record]
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
digest.update(json.dumps(company.planted, sort_keys=True, default=str).encode())
print(sum(len(t) for t in company.tables.values()), digest.hexdigest())
"""


def _generation_digest(today: str, now: str) -> str:
    import subprocess
    import sys

    from config.embedded_servers import BASE_DIR

    # A separate interpreter each time, as a restarted simulator is (string hashing differs per process).
    done = subprocess.run(
        [sys.executable, "-c", DIGEST, today, now], cwd=BASE_DIR, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_two_generations_with_the_same_seed_day_and_time_are_identical_records_and_ids():
    first = _generation_digest("2026-12-05", "2026-12-06T03:00:00+00:00")
    second = _generation_digest("2026-12-05", "2026-12-06T03:00:00+00:00")
    later = _generation_digest("2026-12-05", "2026-12-06T03:20:00+00:00")

    assert first == second
    assert int(first.split()[0]) > 1000  # a company, not an empty world
    # Another start time moves every timestamp: that is why a restart must reuse the first one.
    assert later != first


def test_a_restart_on_the_same_day_serves_the_same_generation(tmp_path, monkeypatch):
    from apps.devstack import demo

    monkeypatch.setattr(demo, "GENERATION_FILE", tmp_path / "simulator.json")
    first_start = dt.datetime(2026, 12, 6, 3, 0, 0, tzinfo=dt.UTC)

    first, new_first = demo.simulator_generation("2026-12-05", now=first_start)
    again, new_again = demo.simulator_generation("2026-12-05", now=first_start + dt.timedelta(minutes=20))
    next_day, new_next_day = demo.simulator_generation("2026-12-06", now=first_start + dt.timedelta(days=1))

    assert new_first and first == {"seed": 42, "today": "2026-12-05", "now": "2026-12-06T03:00:00+00:00"}
    assert not new_again and again == first
    # A new day is a new world, and the demo re-reads it whole (sync --full) so no two generations mix.
    assert new_next_day and next_day["now"] == "2026-12-07T03:00:00+00:00"
    assert demo.simulator_generation("2026-12-06")[0] == next_day


def test_a_damaged_generation_file_starts_a_new_generation(tmp_path, monkeypatch):
    from apps.devstack import demo

    monkeypatch.setattr(demo, "GENERATION_FILE", tmp_path / "simulator.json")
    (tmp_path / "simulator.json").write_text("{not json")

    generation, new = demo.simulator_generation("2026-12-05")

    assert new and generation["today"] == "2026-12-05"


class _RecordingStack:
    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []

    def manage(self, *args: str) -> None:
        self.commands.append(args)


def test_the_demo_resolves_entities_after_the_syncs():
    # The review queue of name variants is part of the demo: it must be filled before the URLs are printed,
    # not 15 minutes later when beat first runs resolve-entities.
    from apps.devstack import demo

    stack = _RecordingStack()
    demo.load_systems(stack, full=False)  # type: ignore[arg-type]
    assert stack.commands == [
        ("sync", "crm"),
        ("sync", "accounting"),
        ("sync", "pm"),
        ("sync", "docs"),
        ("resolve_entities",),
    ]

    stack = _RecordingStack()
    demo.load_systems(stack, full=True)  # type: ignore[arg-type]
    assert stack.commands[:3] == [
        ("sync", "crm", "--full"),
        ("sync", "accounting", "--full"),
        ("sync", "pm", "--full"),
    ]
    assert stack.commands[3:] == [("sync", "docs", "--full"), ("resolve_entities",)]
