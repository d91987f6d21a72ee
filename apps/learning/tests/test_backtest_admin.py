"""Backtest in admin: a rule or its draft over a period, its chart, figures, examples; large on a worker."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils.html import escape

from apps.learning import backtests, tasks
from apps.learning.models import BacktestRun

from .builders import T0, thin_history

pytestmark = pytest.mark.django_db

URL = "/admin/learning/ruleanalytics/backtest/"


@pytest.fixture
def history():
    return thin_history()


def test_a_draft_backtest_shows_chart_figures_difference_and_examples(client, ops_manager, history):
    client.force_login(ops_manager)
    response = client.get(
        URL, {"rule": "thin", "what": "draft", "since": "2026-06-01", "until": "2026-06-30"}
    )
    assert response.status_code == 200
    text = response.content.decode()
    chart = text.split('id="chart-backtest"')[1].split("</svg>")[0]
    assert "polyline" in chart and "<script" not in chart, "server-drawn SVG, no script"
    assert "Contexts replayed: <strong>9</strong>" in text
    # The draft (< 12) matches margins 5 and 10, both acted on; live (< 25) also 15 and 20, false alarms.
    assert "100% (2 of 2)" in text and "50% (2 of 4)" in text
    words = re.sub(r"<[^>]+>", "", text)
    assert "2 no longer matching (#3, #4)" in words, "subjects by name (these ids have no project left)"
    assert "cannot be estimated" in text
    assert "Margin 5.0%" in text and "project.margin_pct" not in text, "facts in words, read as values"
    assert "<h2>thin: its draft, beside live v1</h2>" in text
    assert "matched 2, not matched 7" in text


def test_examples_and_differences_name_their_subjects_and_until_takes_its_day_in(
    client, ops_manager, history
):
    from tests.factories import ProjectFactory

    named = {sid: ProjectFactory(pk=sid, name=f"Pier {sid} & <Annex>") for sid in (1, 3)}
    client.force_login(ops_manager)
    # The ten days run from T0; "until" the day of the fourth decision takes that decision in.
    last = (T0 + dt.timedelta(days=3)).date().isoformat()
    text = client.get(
        URL, {"rule": "thin", "what": "draft", "since": T0.date().isoformat(), "until": last}
    ).content.decode()
    assert "Contexts replayed: <strong>4</strong>" in text
    examples = text.split('id="backtest-examples"')[1]
    link = f'<a href="/admin/entities/project/{named[1].pk}/change/">{escape(str(named[1]))}</a>'
    assert link in examples and "Pier 1 &amp; &lt;Annex&gt;" in link
    assert f"{escape(str(named[3]))}</a>" in text.split('id="backtest-delta"')[1]


def test_a_period_that_ends_before_it_starts_is_refused_with_the_reason(client, ops_manager, history):
    client.force_login(ops_manager)
    response = client.get(URL, {"rule": "thin", "since": "2026-07-30", "until": "2026-06-30"})
    assert response.status_code == 400
    assert "the period is empty: “From” is after “Until”" in response.content.decode()


def test_a_period_without_its_contexts_replays_nothing(client, ops_manager, history):
    client.force_login(ops_manager)
    text = client.get(URL, {"rule": "thin", "since": "2026-07-01"}).content.decode()
    assert "Contexts replayed: <strong>0</strong>" in text and "No match in the period." in text


def test_a_large_period_runs_on_a_worker_with_progress(client, ops_manager, history, monkeypatch):
    monkeypatch.setattr(backtests, "INLINE_LIMIT", 3)
    client.force_login(ops_manager)
    response = client.get(URL, {"rule": "thin", "what": "draft"})
    run = BacktestRun.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/backtest/{run.pk}/")
    assert (run.status, run.expected, run.use_draft) == ("queued", 9, True)
    waiting = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' in waiting and "0 of about 9 contexts replayed (0%)" in waiting
    assert tasks.run_backtest(run.pk) == "replayed 9"
    assert tasks.run_backtest(run.pk) == "not queued", "a repeat does nothing"
    run.refresh_from_db()
    assert run.status == "done" and run.result["precision"] == [2, 0]
    done = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in done and 'id="chart-backtest"' in done


@pytest.fixture
def dead_broker(monkeypatch):
    """Celery's producers pointed at a loopback port nothing listens on (the broker is down): the task's
    ``delay`` goes through kombu's real connect and publish retries and fails as it would in production."""
    from config.celery import app
    from config.embedded_servers import free_port

    port = free_port()
    connect = app.connection_for_write
    monkeypatch.setattr(
        app, "connection_for_write", lambda url=None, **kw: connect(f"redis://127.0.0.1:{port}/0", **kw)
    )
    saved = app._pool, app.amqp._producer_pool
    app._pool = app.amqp._producer_pool = None  # the cached pools would keep the real broker
    yield port
    if app._pool is not None:
        app._pool.force_close_all()
    app._pool, app.amqp._producer_pool = saved


def test_a_run_that_cannot_be_queued_fails_saying_so_instead_of_waiting_forever(
    client, ops_manager, history, monkeypatch, django_capture_on_commit_callbacks, dead_broker
):
    monkeypatch.setattr(backtests, "INLINE_LIMIT", 3)
    client.force_login(ops_manager)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.get(URL, {"rule": "thin", "what": "draft"})
    run = BacktestRun.objects.get()
    assert (run.status, run.finished_at is not None) == ("failed", True)
    assert run.error.startswith(
        f"It could not be queued for a worker: Error 111 connecting to 127.0.0.1:{dead_broker}"
    )
    page = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in page and "Try again when the broker is back." in page


def test_account_managers_cannot_backtest(client, account_manager, history):
    client.force_login(account_manager)
    assert client.get(URL, {"rule": "thin"}).status_code in (302, 403)
