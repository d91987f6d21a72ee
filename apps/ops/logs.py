"""Log formats: ``plain`` for people at a terminal, ``json`` (one object per line) for production.

``LOG_FORMAT=json`` (the default in ``config.settings.production``) switches every handler of
``config.settings`` to ``JsonLineFormatter``. Each line has ``time``, ``level``, ``logger``, ``message``,
``request_id``, ``task_id``, ``task_name``, the traceback as ``exc_info`` when there is one, and any
``extra`` a caller passed. Django's ``request`` extra becomes ``method`` and ``path``.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(ids)s%(message)s"


class PlainFormatter(logging.Formatter):
    """The plain format, with ``[request_id task_id] `` only when the line belongs to one."""

    def format(self, record: logging.LogRecord) -> str:
        ids = [i for i in (getattr(record, "request_id", None), getattr(record, "task_id", None)) if i]
        record.ids = f"[{' '.join(ids)}] " if ids else ""
        return super().format(record)


class JsonLineFormatter(JsonFormatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger", "asctime": "time"})
        kwargs.setdefault("timestamp", False)
        kwargs.setdefault("json_default", str)
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(task_id)s %(task_name)s",
            *args,
            **kwargs,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message)
        request = log_data.pop("request", None)
        if request is not None and hasattr(request, "path"):
            log_data.setdefault("method", getattr(request, "method", None))
            log_data.setdefault("path", request.path)
        log_data.pop("server_time", None)
        for name in ("request_id", "task_id", "task_name"):
            log_data.setdefault(name, getattr(record, name, None))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        import datetime as dt

        return dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds")


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """``LOGGING`` for ``config.settings``: one console handler, context filters on it."""
    if log_format not in ("plain", "json"):
        raise ValueError(f"LOG_FORMAT must be 'plain' or 'json', not {log_format!r}")
    formatter: dict[str, str] = (
        {"()": "apps.ops.logs.JsonLineFormatter"}
        if log_format == "json"
        else {"()": "apps.ops.logs.PlainFormatter", "format": PLAIN_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "apps.ops.context.ContextFilter"},
            "client_errors": {"()": "apps.ops.context.ClientErrorFilter"},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["context", "client_errors"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            # Django's own handlers (mail_admins, the runserver console) stay out: the root prints once.
            "django": {"handlers": [], "propagate": True},
        },
    }
