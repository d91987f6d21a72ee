"""The web process as gunicorn loads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_web_process_has_the_task_modules_before_its_first_request() -> None:
    # A web request that queues a task by name (a rule published, an entity edited) must not be the one
    # that imports the apps' task modules: the WSGI module imports them when the process starts.
    probe = (
        "import config.wsgi; from celery import current_app; "
        "from apps.rules.evaluation.triggers import EVALUATE_PENDING_TASK, EVALUATE_RUN_TASK; "
        "print(sorted({EVALUATE_PENDING_TASK, EVALUATE_RUN_TASK} - set(current_app.tasks)))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
