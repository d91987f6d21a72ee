"""Logging filters the settings' LOGGING refers to."""

from __future__ import annotations

import logging


class ClientErrorWithoutTraceback(logging.Filter):
    """A 4xx is the client's mistake or a refusal working as intended: one line (``Not Found: /x``,
    ``Forbidden (Permission denied): /y``), not the traceback Django attaches to a refused request.
    5xx records keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True
