"""A backtest too large for the request runs on a real Celery worker: an operations manager asks in admin,
the page waits with its progress, the worker replays, and the page shows the same figures as a replay
in this process."""

from __future__ import annotations

import pytest

from apps.learning import backtests
from apps.learning.models import BacktestRun
from apps.learning.tests.builders import thin_history

from .conftest import wait_for

pytestmark = [pytest.mark.e2e]

URL = "/admin/learning/ruleanalytics/backtest/"


def test_a_large_backtest_runs_on_the_worker_and_its_page_shows_the_figures(
    celery_worker, client, ops_manager, monkeypatch
):
    rule = thin_history()
    monkeypatch.setattr(backtests, "INLINE_LIMIT", 3)  # this process decides what is large
    client.force_login(ops_manager)
    asked = client.get(URL, {"rule": "thin", "what": "draft"})
    assert asked.status_code == 302, asked.content.decode()[-3000:]
    run = BacktestRun.objects.get()
    wait_for(
        lambda: BacktestRun.objects.filter(pk=run.pk, status__in=["done", "failed"]).exists(),
        timeout=60,
        message="the worker to finish the backtest",
    )
    run.refresh_from_db()
    assert (run.status, run.error, run.progress) == ("done", "", 9)
    here = backtests.as_json(backtests._run(rule, use_draft=True, draft=None, since=None, until=None))
    assert run.result == here and run.result["precision"] == [2, 0]
    page = client.get(asked["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in page and 'id="chart-backtest"' in page
    assert "Contexts replayed: <strong>9</strong>" in page
