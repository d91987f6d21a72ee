"""gunicorn settings (Procfile ``web``): prometheus-client's multiprocess mode for /metrics.

With ``PROMETHEUS_MULTIPROC_DIR`` set, every process writes its counters to files there and a scrape
adds them up; the folder is emptied when the server starts (stale files from a previous run would be
counted again) and a dead worker's live gauges are dropped. Celery workers on the same host share
the folder (the Procfile sets it for both).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def on_starting(server: Any) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        path = Path(folder)
        if path.exists():
            for child in path.iterdir():
                if child.is_file() and child.suffix == ".db":
                    child.unlink()
        path.mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
