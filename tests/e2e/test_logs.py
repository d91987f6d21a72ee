"""A real worker with LOG_FORMAT=json writes one JSON object per line, with the task id and the id of the
request that queued the task."""

from __future__ import annotations

import json
import re

import pytest

from apps.dashboard.models import Heartbeat
from apps.dashboard.tasks import heartbeat
from apps.ops import context
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def json_logs(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "json")


def test_worker_lines_are_json_with_task_and_request_ids(json_logs, celery_worker, tmp_path):
    token = context.request_id.set("req-e2e-0001")
    try:
        result = heartbeat.delay()
    finally:
        context.request_id.reset(token)
    wait_for(lambda: Heartbeat.objects.filter(name="worker").exists(), timeout=60, message="the heartbeat")

    def lines():
        text = (tmp_path / "worker.log").read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    done = wait_for(
        lambda: [x for x in lines() if x.get("task_id") == result.id], timeout=30, message="the task's line"
    )
    assert done[0]["task_name"] == "apps.dashboard.tasks.heartbeat"
    assert done[0]["request_id"] == "req-e2e-0001"
    assert {"time", "level", "logger", "message"} <= done[0].keys()
    text = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in text
    # No line in the plain format or Celery's own "[time: LEVEL/Process]" one: logging went through
    # LOGGING (only the startup banner, printed rather than logged, is not JSON).
    assert not re.search(r"^(\d{4}-\d\d-\d\d |\[\d{4}-\d\d-\d\d )", text, re.MULTILINE)
