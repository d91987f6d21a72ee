"""A Celery worker's CPU priority: ``WORKER_NICE`` (the Procfile's ``writeback`` sets it from
``WRITEBACK_NICE``, default 10), so background work yields the CPU to what a person is waiting for.

The vendor notes are held to the vendors' rate budgets and are seconds late by design; an escalation's
email is what its account manager waits for. On a machine that runs both kinds of worker, a burst's
notes took nearly as much CPU as its emails, and the emails' p95 was 3.1 s instead of 1.7–2.5 s
(docs/PERFORMANCE.md, session 21).

A nice value alone is not enough on Linux: with the scheduler's autogroups
(``kernel.sched_autogroup_enabled``, on by default), CPU is shared between sessions first, and a
process manager starts each process in a session of its own (``setsid``: honcho, foreman, systemd),
where a nice value only ranks the session's own processes. So when the worker's session holds nothing
but the worker and the processes that started it, the session's autogroup is given the same nice value
(``/proc/self/autogroup``). A session shared with other work (a terminal, a script running several
workers) keeps its priority. Under cgroups (systemd's ``CPUWeight=``, a container's CPU shares) the
operator's weights decide; see docs/OPERATIONS.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

PROC = Path("/proc")


def lower_priority(nice: int, proc: Path = PROC) -> list[str]:
    """Run this process, and the pool it forks, at CPU priority ``nice`` (never raised: a process may only
    lower its own); returns what was set, for the worker's log."""
    if nice <= 0:
        return []
    done: list[str] = []
    if os.getpriority(os.PRIO_PROCESS, 0) < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        done.append(f"process nice {nice}")
    if _session_is_own(proc):
        try:
            (proc / "self" / "autogroup").write_text(f"{nice}\n")
            done.append(f"session autogroup nice {nice}")
        except OSError as exc:  # a kernel without autogroups, or not Linux: the process's nice stands
            logger.info("worker priority: autogroup not set: %s", exc)
    return done


def _session_is_own(proc: Path) -> bool:
    """Whether every process of this session is this one or one of its ancestors (the shell or process
    manager's child that started it)."""
    if not proc.is_dir():  # not Linux: no autogroups either
        return False
    me = os.getpid()
    sid = os.getsid(0)
    stats = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = _stat(entry)
            except (OSError, ValueError, IndexError):  # gone meanwhile, or unreadable: not ours to judge
                continue
    ancestors = {me}
    pid = me
    while pid in stats and pid != sid:
        pid = stats[pid][0]
        ancestors.add(pid)
    if sid not in ancestors:
        return False
    return all(pid in ancestors for pid, (_, session) in stats.items() if session == sid)


def _stat(entry: Path) -> tuple[int, int]:
    """(parent pid, session id) from ``/proc/<pid>/stat``."""
    fields = stat_fields(entry)
    return int(fields[1]), int(fields[3])


def stat_fields(entry: Path) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name, from the state on (``proc(5)``'s third
    field): the name may hold spaces and parentheses, so they are read after its closing parenthesis."""
    text = (entry / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()
