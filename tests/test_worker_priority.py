"""A worker's CPU priority (config/worker_priority.py): set in real child processes, since a process can
only lower its own priority and never take it back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import worker_priority

ROOT = Path(__file__).resolve().parent.parent
AUTOGROUP = Path("/proc/self/autogroup")
needs_autogroup = pytest.mark.skipif(not AUTOGROUP.exists(), reason="kernel without autogroups")

CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from config.worker_priority import lower_priority
    done = lower_priority(int(sys.argv[1]))
    autogroup = Path("/proc/self/autogroup").read_text().split()[-1]
    print(os.getpriority(os.PRIO_PROCESS, 0), autogroup, "; ".join(done), sep="|")
    """
)


def _child(nice: int, *, own_session: bool, sibling: bool = False) -> tuple[int, int, str]:
    """Run ``lower_priority(nice)`` in a new Python process; returns (its nice, its session's autogroup
    nice, what it reported). ``own_session``: started in a session of its own, as a process manager
    starts it; ``sibling``: with another process beside it in that session."""
    argv = [sys.executable, "-c", CHILD, str(nice)]
    if sibling:  # a shell starts a sleeper, then the worker: the sleeper is no ancestor of it
        argv = ["sh", "-c", 'sleep 30 & "$@"; status=$?; kill $!; exit $status', "sh", *argv]
    out = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=60, start_new_session=own_session, check=True
    ).stdout.strip()
    process_nice, autogroup_nice, done = out.split("|")
    return int(process_nice), int(autogroup_nice), done


@needs_autogroup
def test_a_worker_in_its_own_session_lowers_the_process_and_its_sessions_autogroup():
    assert _child(10, own_session=True) == (10, 10, "process nice 10; session autogroup nice 10")


@needs_autogroup
def test_a_session_shared_with_other_work_keeps_its_autogroup():
    process_nice, autogroup_nice, done = _child(10, own_session=True, sibling=True)
    assert (process_nice, autogroup_nice, done) == (10, 0, "process nice 10")


def test_zero_changes_nothing():
    process_nice, _, done = _child(0, own_session=True)
    assert (process_nice, done) == (os.getpriority(os.PRIO_PROCESS, 0), "")


def _proc(tmp_path: Path, processes: dict[int, tuple[int, int]]) -> Path:
    """A /proc with these pids, each (parent, session); command names with spaces and parentheses."""
    for pid, (parent, session) in processes.items():
        (tmp_path / str(pid)).mkdir(parents=True)
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (odd) name) S {parent} {pid} {session} 0 -1\n")
    (tmp_path / "self").mkdir()
    return tmp_path


def test_the_session_is_own_when_it_holds_only_the_worker_and_its_ancestors(tmp_path, monkeypatch):
    me = os.getpid()
    monkeypatch.setattr(os, "getsid", lambda _: 100)
    # The session leader (a shell) started the worker through a wrapper.
    own = _proc(tmp_path / "own", {100: (1, 100), 200: (100, 100), me: (200, 100), 999: (1, 5)})
    assert worker_priority._session_is_own(own)
    # Another process of the same session, not an ancestor: a terminal's other job.
    shared = _proc(tmp_path / "shared", {100: (1, 100), me: (100, 100), 300: (100, 100)})
    assert not worker_priority._session_is_own(shared)
    # The chain never reaches the session's leader (it went away): nothing to vouch for the session.
    orphan = _proc(tmp_path / "orphan", {me: (1, 100)})
    assert not worker_priority._session_is_own(orphan)
    # No /proc at all (macOS): only the process's own nice is set.
    assert not worker_priority._session_is_own(tmp_path / "no-proc")


def test_worker_nice_is_checked_when_the_worker_starts(monkeypatch):
    from config.celery import _worker_priority

    for text in ("ten", "-5", "20", "1.5"):
        monkeypatch.setenv("WORKER_NICE", text)
        with pytest.raises(ImproperlyConfigured, match="WORKER_NICE must be a whole number from 0 to 19"):
            _worker_priority()
    monkeypatch.setenv("WORKER_NICE", "0")
    before = os.getpriority(os.PRIO_PROCESS, 0)
    _worker_priority()  # nothing to do
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


@needs_autogroup
def test_the_procfiles_writeback_worker_starts_at_nice_10_in_its_session(tmp_path):
    """The Procfile's ``writeback`` line as a process manager runs it: a shell in a session of its own. The
    broker is a closed port: the priority is set as the worker starts, before it connects."""
    [line] = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("writeback:")]
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("WRITEBACK_NICE", "WORKER_NICE", "PYTEST_CURRENT_TEST")
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        DJANGO_SETTINGS_MODULE="config.settings.e2e",
    )
    shell = subprocess.Popen(
        ["sh", "-c", line.split(":", 1)[1]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        seen = _wait_for_worker_nice(shell.pid)
    finally:
        os.killpg(shell.pid, 9)
        shell.wait(10)
    assert seen == (10, "nice 10")


def _wait_for_worker_nice(session: int, timeout: float = 60) -> tuple[int, str]:
    """(nice, autogroup's nice) of the Celery worker in ``session`` once it has lowered its priority."""
    import time

    deadline = time.monotonic() + timeout
    last: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                if not entry.name.isdigit() or b"celery" not in (entry / "cmdline").read_bytes():
                    continue
                fields = worker_priority.stat_fields(entry)
                if int(fields[3]) != session:
                    continue
                autogroup = (entry / "autogroup").read_text().split()
            except OSError:
                continue
            last = (int(fields[16]), " ".join(autogroup[-2:]))  # nice: proc(5)'s 19th field
            if last[0] > 0:
                return last
        time.sleep(0.2)
    return last
