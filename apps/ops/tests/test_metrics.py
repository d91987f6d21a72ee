"""/metrics: the SPEC's metrics from the database snapshot, process counters, METRICS_TOKEN, multiprocess."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.connectors.models import StreamState, SyncRun, WebhookDelivery
from apps.escalations.models import Delivery
from apps.ops.snapshot import audit_verification_record, metrics_snapshot_take
from apps.ops.tasks import metrics_snapshot
from apps.rules.models import PendingEvaluation
from tests.api.conftest import make_decision, make_escalation
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db

SPEC_METRICS = {
    "fulcrum_sync_records_total",
    "fulcrum_stream_lag_seconds",
    "fulcrum_webhook_deliveries_total",
    "fulcrum_decisions_total",
    "fulcrum_escalations_open",
    "fulcrum_deliveries_total",
    "fulcrum_outbox_dead",
    "fulcrum_pending_evaluations",
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def world():
    now = timezone.now()
    crm = ConnectionFactory(slug="crm", kind="hubspot")
    StreamState.objects.create(
        connection=crm, stream="companies", last_success_at=now - dt.timedelta(seconds=90)
    )
    SyncRun.objects.create(
        connection=crm,
        stream="companies",
        started_at=now,
        heartbeat_at=now,
        status="succeeded",
        counts={"seen": 7},
        published_at=now,
    )
    SyncRun.objects.create(  # its worker died before linking and marking what it stored
        connection=crm,
        stream="companies",
        started_at=now - dt.timedelta(minutes=20),
        heartbeat_at=now,
        finished_at=now - dt.timedelta(minutes=19),
        status="partial",
        counts={"seen": 5},
    )
    SyncRun.objects.create(connection=crm, stream="owners", started_at=now, heartbeat_at=now)  # running
    escalation = make_escalation()
    make_decision(escalation.rule_version, "change_order", escalation.subject_id)
    make_decision(escalation.rule_version, "change_order", escalation.subject_id, outcome="not_matched")
    for i, state in enumerate(["delivered", "dead", "dead", "pending"]):
        Delivery.objects.create(
            escalation=escalation,
            action="email_account_manager",
            target=f"t{i}",
            idempotency_key=f"k{i}",
            state=state,
            next_attempt_at=now,
            created_at=now,
        )
    PendingEvaluation.objects.create(
        subject_type="project", subject_id=1, trigger="webhook", queued_at=now - dt.timedelta(seconds=30)
    )
    return escalation


def test_every_spec_metric_is_served(client, world):
    metrics_snapshot.apply()
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    missing = SPEC_METRICS - names - {"fulcrum_webhook_deliveries_total"}  # counted once one arrives
    assert not missing
    samples = _samples(text)
    assert samples[("fulcrum_sync_records_total", (("connection", "crm"), ("stream", "companies")))] == 12
    lag = samples[("fulcrum_stream_lag_seconds", (("connection", "crm"), ("stream", "companies")))]
    assert 89 < lag < 200
    unpublished = samples[("fulcrum_sync_unpublished_oldest_seconds", (("connection", "crm"),))]
    assert 19 * 60 <= unpublished < 21 * 60  # the finished run's age; the running one is its worker's
    rule = world.rule.key
    assert samples[("fulcrum_decisions_total", (("outcome", "matched"), ("rule", rule)))] == 1
    assert samples[("fulcrum_decisions_total", (("outcome", "not_matched"), ("rule", rule)))] == 1
    assert samples[("fulcrum_escalations_open", (("route", "executive"), ("severity", "high")))] == 1
    key = ("fulcrum_deliveries_total", (("action", "email_account_manager"), ("status", "dead")))
    assert samples[key] == 2
    assert samples[("fulcrum_outbox_dead", ())] == 2
    assert samples[("fulcrum_pending_evaluations", ())] == 1
    assert samples[("fulcrum_pending_evaluation_oldest_seconds", ())] >= 30
    assert samples[("fulcrum_metrics_snapshot_timestamp_seconds", ())] > 0


def test_decisions_counter_only_grows_and_counts_each_decision_once(client, world):
    metrics_snapshot_take()
    metrics_snapshot_take()  # nothing new: no double counting
    make_decision(world.rule_version, "change_order", world.subject_id)
    metrics_snapshot_take()
    samples = _samples(client.get("/metrics").content.decode())
    assert samples[("fulcrum_decisions_total", (("outcome", "matched"), ("rule", world.rule.key)))] == 2


def test_no_snapshot_yet_still_answers_with_its_age(client):
    samples = _samples(client.get("/metrics").content.decode())
    assert samples[("fulcrum_metrics_snapshot_timestamp_seconds", ())] == 0


def test_audit_verification_outcome_is_exported(client, world):
    audit_verification_record(ok=False, reason="anchored entry #3 was rewritten")
    metrics_snapshot_take()
    samples = _samples(client.get("/metrics").content.decode())
    assert samples[("fulcrum_audit_verify_ok", ())] == 0


def test_metrics_token_is_required_when_set(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200


def test_webhook_answers_are_counted_by_result(client):
    ConnectionFactory(slug="books", kind="quickbooks")
    before = _samples(client.get("/metrics").content.decode())
    key = ("fulcrum_webhook_deliveries_total", (("connection", "books"), ("result", "unauthorized")))
    client.post("/webhooks/books/", data=b"{}", content_type="application/json")
    after = _samples(client.get("/metrics").content.decode())
    assert after[key] == before.get(key, 0) + 1
    assert WebhookDelivery.objects.filter(status="rejected").count() == 1
    client.post("/webhooks/random-slug-123/", data=b"{}", content_type="application/json")
    text = client.get("/metrics").content.decode()
    assert "random-slug-123" not in text
    unknown = ("fulcrum_webhook_deliveries_total", (("connection", "-"), ("result", "unknown_connection")))
    assert _samples(text)[unknown] >= 1


def test_multiprocess_mode_adds_up_every_process(tmp_path):
    """Two processes count, a third (the scrape) sees the sum: prometheus-client's multiprocess mode."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
    }
    count = (
        "import django; django.setup(); from apps.ops import metrics; "
        "metrics.WEBHOOKS.labels('crm', 'accepted').inc(3)"
    )
    root = Path(settings.BASE_DIR)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], cwd=root, env=env, check=True, timeout=120)
    scrape = (
        "import django; django.setup(); from prometheus_client import generate_latest; "
        "from prometheus_client import CollectorRegistry, multiprocess; r = CollectorRegistry(); "
        "multiprocess.MultiProcessCollector(r); print(generate_latest(r).decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", scrape],
        cwd=root,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    samples = _samples(out)
    assert samples[("fulcrum_webhook_deliveries_total", (("connection", "crm"), ("result", "accepted")))] == 6
    assert len(list(tmp_path.iterdir())) == 2  # one file per process
