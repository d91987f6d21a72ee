"""The Celery app of ``bench.escalate --timeline``'s workers: the project's app, plus a probe that stamps each
outbox row's way through a worker and writes the stamps to ``$BENCH_TIMELINE_DIR/<pid>.jsonl``.

Nothing of the product changes: the probe wraps, in each pool process, the functions a chunk goes through
(``delivery._claimed_rows``, ``EscalationEmail.perform``, ``MailSession.send``, the SMTP backend's ``open``,
``delivery._finish_delivered``) and records ``time.time()`` around them. Per row (one JSON line):

- ``task`` the Celery task id (the bench pairs it with the time it published the task), ``pickup`` when the
  task started in the pool process, ``claimed`` when its claim and row fetch returned;
- ``render`` when the action started on the row, ``send`` / ``sent`` around the SMTP transaction (for the
  chunk's first email the connection's ``open`` is stamped apart: ``open`` / ``opened``);
- ``recorded`` when the UPDATE that marked it delivered returned.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_process_init

from config.celery import app

__all__ = ["app"]

_rows: dict[int, dict[str, Any]] = {}
_task: dict[str, Any] = {}


def _now() -> float:
    return time.time()


@task_prerun.connect
def _started(task_id: str | None = None, **_: Any) -> None:
    _task.clear()
    _task.update({"task": task_id, "pickup": _now()})


@task_postrun.connect
def _ended(**_: Any) -> None:
    folder = os.environ.get("BENCH_TIMELINE_DIR")
    if not folder or not _rows:
        _rows.clear()
        return
    with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a") as out:
        for pk, row in _rows.items():
            out.write(json.dumps({"pk": pk, **row}) + "\n")
    _rows.clear()


@worker_process_init.connect
def _install(**_: Any) -> None:
    from django.core.mail.backends.smtp import EmailBackend

    from apps.escalations import delivery
    from apps.escalations.actions import email

    current: dict[str, Any] = {}

    claimed_rows = delivery._claimed_rows

    @functools.wraps(claimed_rows)
    def _claimed_rows(pks: list[int]) -> Any:
        rows = claimed_rows(pks)
        at = _now()
        for row in rows:
            _rows[row.pk] = {**_task, "claimed": at, "action": row.action}
        return rows

    setattr(delivery, "_claimed_rows", _claimed_rows)  # noqa: B010 - typed as a method, replaced here

    perform = email.EscalationEmail.perform

    @functools.wraps(perform)
    def _perform(self: Any, row: Any) -> Any:
        current["pk"] = row.pk
        _rows.setdefault(row.pk, dict(_task))["render"] = _now()
        return perform(self, row)

    setattr(email.EscalationEmail, "perform", _perform)  # noqa: B010 - typed as a method, replaced here

    send = email.MailSession.send

    @functools.wraps(send)
    def _send(self: Any, message: Any) -> None:
        stamps = _rows.setdefault(current.get("pk", 0), {})
        stamps["send"] = _now()
        send(self, message)
        stamps["sent"] = _now()

    setattr(email.MailSession, "send", _send)  # noqa: B010 - typed as a method, replaced here

    opener = EmailBackend.open

    @functools.wraps(opener)
    def _open(self: Any) -> Any:
        if self.connection is not None:  # already open: ``send_messages`` asks every time
            return opener(self)
        stamps = _rows.setdefault(current.get("pk", 0), {})
        stamps["open"] = _now()
        try:
            return opener(self)
        finally:
            stamps["opened"] = _now()

    setattr(EmailBackend, "open", _open)  # noqa: B010 - typed as a method, replaced here

    finish = delivery._finish_delivered

    @functools.wraps(finish)
    def _finish_delivered(done: list[tuple[Any, dict, Any]]) -> None:
        finish(done)
        at = _now()
        for row, *_ in done:
            _rows.setdefault(row.pk, {})["recorded"] = at

    setattr(delivery, "_finish_delivered", _finish_delivered)  # noqa: B010 - typed as a method, replaced here
