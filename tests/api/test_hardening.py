"""Issue 19's external probes, each pinned: filter ranges, the trigger enum, JSON everywhere under /api/."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from apps.rules.models import Decision

from .conftest import make_decision, make_escalation

pytestmark = pytest.mark.django_db

PAST_BIGINT = str(2**63)


@pytest.mark.parametrize(
    "url",
    [
        f"/api/evaluation-runs/?subject_id={PAST_BIGINT}",
        f"/api/decisions/?subject_id={PAST_BIGINT}",
        f"/api/escalations/?client={PAST_BIGINT}",
        f"/api/projects/?client={PAST_BIGINT}",
        "/api/decisions/?subject_id=0",
        "/api/decisions/?subject_id=-5",
    ],
)
def test_ids_out_of_range_answer_400_not_500(client, administrator, url):
    client.force_login(administrator)
    response = client.get(url)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"


def test_the_largest_bigint_is_a_valid_filter(client, administrator):
    client.force_login(administrator)
    response = client.get(f"/api/evaluation-runs/?subject_id={2**63 - 1}")
    assert response.status_code == 200 and response.json()["count"] == 0


def test_schema_states_the_id_range(client):
    schema = client.get("/api/schema/?format=json").json()
    params = {p["name"]: p for p in schema["paths"]["/api/decisions/"]["get"]["parameters"]}
    assert params["subject_id"]["schema"] == {
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": 2**63 - 1,
    }


def test_a_decision_triggered_by_entity_resolution_is_in_the_schema(client, administrator):
    escalation = make_escalation()
    decision = make_decision(escalation.rule_version, "change_order", escalation.subject_id)
    Decision.objects.filter(pk=decision.pk).update(trigger="resolution", evaluated_at=timezone.now())
    client.force_login(administrator)
    [row] = client.get("/api/decisions/").json()["results"]
    assert row["trigger"] == "resolution"
    schema = client.get("/api/schema/?format=json").json()
    enum = schema["components"]["schemas"]["TriggerEnum"]["enum"]
    assert "resolution" in enum


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_unknown_api_paths_answer_json_even_without_a_csrf_token(administrator, method):
    client = Client(enforce_csrf_checks=True)
    client.force_login(administrator)
    response = getattr(client, method)("/api/no-such-thing/", data="{}", content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


def test_a_csrf_failure_under_api_is_json(administrator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(administrator)
    escalation = make_escalation()
    response = client.post(
        f"/api/escalations/{escalation.pk}/acknowledge/", data={}, content_type="application/json"
    )
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert "CSRF" in response.json()["error"]["message"]


def test_a_csrf_failure_outside_api_keeps_django_page(administrator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(administrator)
    response = client.post("/accounts/logout/")
    assert response.status_code == 403 and response["Content-Type"].startswith("text/html")


def test_the_schema_states_the_cofiring_window_range(client):
    schema = client.get("/api/schema/?format=json").json()
    params = {p["name"]: p for p in schema["paths"]["/api/analytics/fired-together/"]["get"]["parameters"]}
    assert params["window_hours"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 8760}


def test_free_text_filters_state_that_nul_is_refused(client, administrator):
    schema = client.get("/api/schema/?format=json").json()
    params = {p["name"]: p for p in schema["paths"]["/api/clients/"]["get"]["parameters"]}
    assert params["owner_email"]["schema"]["pattern"] == "^[^\\u0000]*$"
    assert "pattern" not in params["flagged"]["schema"]
    client.force_login(administrator)
    response = client.get("/api/clients/?owner_email=a%00b")
    assert response.status_code == 400 and "Null characters" in str(response.json()["error"]["detail"])
