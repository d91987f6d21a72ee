"""The Prometheus alert rules and the Grafana dashboard name only metrics /metrics serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from django.conf import settings

from apps.ops import metrics

DEPLOY = Path(settings.BASE_DIR) / "deploy"
SERVED = {
    *metrics.HELP,
    "fulcrum_metrics_snapshot_timestamp_seconds",
    "fulcrum_http_requests_total",
    "fulcrum_http_request_duration_seconds_bucket",
    "fulcrum_webhook_deliveries_total",
    "fulcrum_celery_tasks_total",
}
NAME = re.compile(r"\bfulcrum_[a-z_]+")


def test_alert_rules_cover_the_issue_and_use_served_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "fulcrum-alerts.yml").read_text())
    [group] = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert {
        "FulcrumStreamLagging",
        "FulcrumDeadLetters",
        "FulcrumPendingEvaluationsStuck",
        "FulcrumNoWorker",
        "FulcrumAuditVerificationFailing",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert set(NAME.findall(rule["expr"])) <= SERVED, name
        assert rule["labels"]["severity"] in ("warning", "critical")
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"{{#{anchor}}}" in (Path(settings.BASE_DIR) / "docs" / "OPERATIONS.md").read_text(), anchor


def test_grafana_dashboard_is_importable_and_uses_served_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "fulcrum-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert set(NAME.findall(target["expr"])) <= SERVED, panel["title"]
