"""The request or task a log line belongs to, carried in context variables.

``RequestIdMiddleware`` sets ``request_id`` for the request's duration (the caller's ``X-Request-ID``
when it is a sane token, else a fresh one) and echoes it in the response. Tasks queued while serving a
request carry that id in a message header, so the worker's lines for the task name the request that
caused it; Celery's ``task_prerun`` sets ``task_id`` and ``task_name``. ``ContextFilter`` copies all
three onto every log record, where the plain and the JSON formatters pick them up.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.http import HttpRequest, HttpResponse

request_id: ContextVar[str | None] = ContextVar("fulcrum_request_id", default=None)
task_id: ContextVar[str | None] = ContextVar("fulcrum_task_id", default=None)
task_name: ContextVar[str | None] = ContextVar("fulcrum_task_name", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
TASK_HEADER = "fulcrum_request_id"
# A proxy's id is kept only when it cannot inject anything into a log line or a header.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def new_request_id(incoming: str | None) -> str:
    return incoming if incoming and _SANE_ID.match(incoming) else uuid.uuid4().hex


class RequestIdMiddleware:
    """First in the chain, so every line logged while serving the request carries its id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = new_request_id(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = rid  # type: ignore[attr-defined]
        token = request_id.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response[REQUEST_ID_HEADER] = rid
        return response


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``task_id`` and ``task_name`` to every record (None outside a request/task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.task_id = task_id.get()
        record.task_name = task_name.get()
        return True


class ClientErrorFilter(logging.Filter):
    """A 4xx is the client's mistake: one line, no traceback.

    Django logs some 4xx with the exception attached (PermissionDenied, BadRequest), and a request can
    reach ``log_response`` from more than one place; the first line per request wins. 5xx are untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if not isinstance(status, int) or not 400 <= status < 500:
            return True
        record.exc_info = None
        record.exc_text = None
        request = getattr(record, "request", None)
        if request is not None:
            if getattr(request, "_fulcrum_4xx_logged", False):
                return False
            request._fulcrum_4xx_logged = True
        return True


# --- Celery -------------------------------------------------------------------------------------------


def _publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    rid = request_id.get()
    if rid and headers is not None:
        headers.setdefault(TASK_HEADER, rid)


def _prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    _set_task(task_id, getattr(task, "name", None), _header(task))


def _postrun(**_: Any) -> None:
    _set_task(None, None, None)


def _header(task: Any) -> str | None:
    # A worker's request carries custom message headers as attributes; an eager apply() under "headers".
    request = getattr(task, "request", None)
    value = getattr(request, TASK_HEADER, None) or (getattr(request, "headers", None) or {}).get(TASK_HEADER)
    return value if isinstance(value, str) and _SANE_ID.match(value) else None


def _set_task(tid: str | None, name: str | None, rid: str | None) -> None:
    # Worker processes run one task at a time per thread: plain set() is enough and survives
    # the signal handler's return (a token reset would undo it before the task runs).
    task_id.set(tid)
    task_name.set(name)
    request_id.set(rid)


def connect_celery_signals() -> None:
    from celery import signals

    signals.before_task_publish.connect(_publish, weak=False, dispatch_uid="fulcrum-ops-publish")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid="fulcrum-ops-prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid="fulcrum-ops-postrun")
