"""Admin pages and the read-only API of the learning loop: who sees what, and that figures reach them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.escalations.models import Escalation
from apps.learning.models import LearningSettings, RiskModel, ShadowSample, ThresholdSuggestion
from apps.rules.models import Decision

from .builders import T0, decision, escalation, publish, snapshot

pytestmark = pytest.mark.django_db

H = dt.timedelta(hours=1)


@pytest.fixture
def data():
    version = publish("thin", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 25}]})
    Decision.objects.bulk_create(
        [
            decision(version, 1, facts=snapshot(project__margin_pct="10")),
            decision(version, 2),
            decision(version, 2),
        ]
    )
    Escalation.objects.bulk_create(
        [
            escalation(version, 1, ack_after=2 * H, closed_after=4 * H, outcome="actioned"),
            escalation(version, 2, ack_after=4 * H, closed_after=6 * H, outcome="false_alarm"),
        ]
    )
    suggestion = ThresholdSuggestion.objects.create(
        rule=version.rule,
        rule_version=version,
        path="when.all[0]",
        fact="project.margin_pct",
        op="lt",
        current_value=25,
        proposed_value="15.1",
        current={"matches": 2, "precision": 0.5, "expected_cost": 3.0},
        proposed={"matches": 1, "precision": 1.0, "expected_cost": 1.0},
        miss_cost=Decimal(1),
        false_alarm_cost=Decimal(1),
        created_at=T0,
    )
    RiskModel.objects.create(
        version=1,
        trained_at=T0,
        n_samples=500,
        n_positive=200,
        features=["project.margin_pct"],
        coefficients={"project.margin_pct": -1.2},
        intercept=0.1,
        means={"project.margin_pct": 15.0},
        scales={"project.margin_pct": 8.0},
        metrics={"cv_auc": 0.81},
    )
    ShadowSample.objects.create(subject_type="project", subject_id=9, sampled_at=T0, facts={}, weight=3)
    return version, suggestion


ADMIN_PAGES = [
    "admin:learning_ruleanalytics_changelist",
    "admin:learning_thresholdsuggestion_changelist",
    "admin:learning_riskmodel_changelist",
    "admin:learning_shadowsample_changelist",
]


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_admin_pages_render_for_operations(client, ops_manager, data, page):
    client.force_login(ops_manager)
    response = client.get(reverse(page))
    assert response.status_code == 200


def test_admin_detail_pages_render(client, administrator, data):
    _, suggestion = data
    client.force_login(administrator)
    for url in (
        reverse("admin:learning_thresholdsuggestion_change", args=[suggestion.pk]),
        reverse("admin:learning_riskmodel_change", args=[RiskModel.objects.get().pk]),
        reverse("admin:learning_shadowsample_change", args=[ShadowSample.objects.get().pk]),
    ):
        assert client.get(url).status_code == 200
    settings_page = client.get(reverse("admin:learning_learningsettings_changelist"), follow=True)
    assert settings_page.status_code == 200 and b"miss_cost" in settings_page.content


def test_analytics_page_shows_hand_checked_figures(client, ops_manager, data):
    client.force_login(ops_manager)
    response = client.get(reverse("admin:learning_ruleanalytics_changelist"), {"period": "all"})
    text = response.content.decode()
    assert "thin v1" in text
    assert "Fires <strong>3</strong> on <strong>2</strong> subjects (repeat ratio 33.3%)" in text
    # precision 1 of 2; acknowledge p50 3 h (2 h and 4 h), p90 3.8 h; resolve p50 5 h.
    assert "<td>50%</td><td>50%</td><td>3.0 h / 3.8 h (2)</td><td>5.0 h / 5.8 h (2)</td>" in text


def test_analytics_page_is_closed_to_account_managers(client, account_manager, data):
    account_manager.is_staff = True
    account_manager.save()
    client.force_login(account_manager)
    response = client.get(reverse("admin:learning_ruleanalytics_changelist"))
    assert response.status_code in (302, 403)
    assert b"thin v1" not in response.content


def test_applying_from_admin_writes_the_draft_and_audits(client, ops_manager, data):
    version, suggestion = data
    client.force_login(ops_manager)
    response = client.post(
        reverse("admin:learning_thresholdsuggestion_changelist"),
        {"action": "apply_selected", "_selected_action": [suggestion.pk]},
        follow=True,
    )
    assert response.status_code == 200
    version.rule.refresh_from_db()
    assert version.rule.draft["when"]["all"][0]["value"] == "15.1"
    assert version.rule.live_version_id == version.pk
    assert AuditEntry.objects.filter(action="threshold_suggestion.applied", actor="user:olivia").exists()


def test_executives_cannot_apply(client, executive, data):
    _, suggestion = data
    executive.is_staff = True
    executive.save()
    client.force_login(executive)
    client.post(
        reverse("admin:learning_thresholdsuggestion_changelist"),
        {"action": "apply_selected", "_selected_action": [suggestion.pk]},
    )
    suggestion.refresh_from_db()
    assert suggestion.status == "open"


def test_settings_change_is_audited(client, administrator):
    client.force_login(administrator)
    settings = LearningSettings.load()
    url = reverse("admin:learning_learningsettings_change", args=[settings.pk])
    form = {
        "miss_cost": "7",
        "false_alarm_cost": "1",
        "min_labels_for_ranking": "200",
        "shadow_sample_size": "50",
        "shadow_horizon_days": "30",
        "retention_days": "90",
        "cofire_window_hours": "24",
        "max_candidates": "200",
        "holdout_fraction": "0.30",
        "min_holdout_labels": "20",
    }
    response = client.post(url, form)
    assert response.status_code == 302
    assert LearningSettings.load().miss_cost == Decimal(7)
    entry = AuditEntry.objects.get(action="learning_settings.changed")
    assert list(entry.data) == ["miss_cost"] and Decimal(entry.data["miss_cost"]) == 7
    assert entry.actor == "user:avery"


# --- API ------------------------------------------------------------------------------------------------


def test_api_rule_analytics(client, executive, data, django_assert_max_num_queries):
    client.force_login(executive)
    with django_assert_max_num_queries(11):
        response = client.get("/api/analytics/rules/", {"rule": "thin"})
    assert response.status_code == 200
    [stats] = response.json()
    assert (stats["rule_key"], stats["version"], stats["fires"], stats["subjects"]) == ("thin", 1, 3, 2)
    assert (stats["precision"], stats["false_alarm_ratio"]) == (0.5, 0.5)
    assert stats["acknowledge"] == {"n": 2, "p50": 3 * 3600.0, "p90": pytest.approx(3.8 * 3600)}
    assert [b["label"] for b in stats["by_route"]] == ["standard"]


def test_api_filters_and_other_endpoints(client, ops_manager, data):
    client.force_login(ops_manager)
    assert client.get("/api/analytics/rules/", {"since": "2030-01-01"}).json() == []
    assert client.get("/api/analytics/rules/", {"since": "yesterday"}).status_code == 400
    assert client.get("/api/analytics/fired-together/", {"window_hours": "x"}).status_code == 400
    assert client.get("/api/analytics/fired-together/").json() == []
    suggestions = client.get("/api/analytics/suggestions/", {"status": "open"}).json()
    assert suggestions["results"][0]["proposed_value"] == "15.1"
    risk = client.get("/api/analytics/risk-model/").json()
    assert risk["active"] is True and risk["model"]["version"] == 1


def test_api_refuses_account_managers_and_anonymous(client, account_manager, data):
    assert client.get("/api/analytics/rules/").status_code in (401, 403)
    client.force_login(account_manager)
    assert client.get("/api/analytics/rules/").status_code == 403
    assert client.get("/api/analytics/suggestions/").status_code == 403


def test_suggestion_changelist_query_count_does_not_grow(
    client, ops_manager, data, django_assert_max_num_queries
):
    _, suggestion = data
    for i in range(15):
        ThresholdSuggestion.objects.create(
            **{
                f.name: getattr(suggestion, f.name)
                for f in ThresholdSuggestion._meta.fields
                if f.name not in ("id", "status")
            }
            | {"status": "superseded", "path": f"when.all[{i}]"}
        )
    client.force_login(ops_manager)
    with django_assert_max_num_queries(15):
        response = client.get(reverse("admin:learning_thresholdsuggestion_changelist"))
    assert (
        response.status_code == 200 and response.content.count(b'field-change">25 \xe2\x86\x92 15.1<') == 16
    )


def test_suggestion_detail_shows_current_vs_proposed_vs_delta(client, ops_manager, data):
    _, suggestion = data
    client.force_login(ops_manager)
    text = client.get(
        reverse("admin:learning_thresholdsuggestion_change", args=[suggestion.pk])
    ).content.decode()
    assert "<th>current (25)</th><th>proposed (15.1)</th>" in text
    assert "<tr><td>matches (stored contexts)</td><td>2</td><td>1</td><td>-1</td></tr>" in text
    assert "<tr><td>precision</td><td>50%</td><td>100%</td><td>+50.0 points</td></tr>" in text
    assert "<tr><td>expected cost</td><td>3</td><td>1</td><td>-2</td></tr>" in text


def test_sweep_now_queues_the_nightly_task_after_commit(
    client, ops_manager, executive, data, monkeypatch, django_capture_on_commit_callbacks
):
    from apps.learning import tasks

    queued = []
    monkeypatch.setattr(tasks.suggest_thresholds, "delay", lambda: queued.append(1))
    url = reverse("admin:learning_thresholdsuggestion_sweep")
    executive.is_staff = True
    executive.save()
    client.force_login(executive)
    assert client.post(url).status_code == 403
    client.force_login(ops_manager)
    page = client.get(reverse("admin:learning_thresholdsuggestion_changelist")).content.decode()
    assert url in page
    assert client.get(url).status_code == 403, "GET changes nothing"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 302 and queued == [1]
