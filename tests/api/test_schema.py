"""The OpenAPI document: valid, served with a local Swagger UI, and true to the running API (schemathesis)."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token

from tests.factories import ConnectionFactory

from .conftest import make_client, make_decision, make_escalation


def test_schema_lists_every_spec_endpoint(client):
    schema = client.get("/api/schema/?format=json").json()
    paths = set(schema["paths"])
    assert {
        "/api/escalations/",
        "/api/escalations/{id}/",
        "/api/escalations/{id}/acknowledge/",
        "/api/escalations/{id}/resolve/",
        "/api/escalations/{id}/dismiss/",
        "/api/escalations/{id}/approve/",
        "/api/escalations/{id}/reject/",
        "/api/clients/",
        "/api/projects/",
        "/api/decisions/",
        "/api/evaluation-runs/",
        "/api/rules/",
        "/api/connections/",
        "/api/connections/{slug}/resync/",
    } <= paths
    resolve = schema["paths"]["/api/escalations/{id}/resolve/"]["post"]
    body = resolve["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body == "#/components/schemas/ResolveRequest"
    assert {"200", "400", "401", "403", "404", "409", "429"} <= set(resolve["responses"])
    filters = {p["name"] for p in schema["paths"]["/api/escalations/"]["get"]["parameters"]}
    assert {"status", "route", "severity", "client", "project", "page"} <= filters
    assert set(schema["components"]["securitySchemes"]) == {"tokenAuth", "cookieAuth"}


def test_swagger_ui_is_served_locally_without_a_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    assert "<script>" not in html  # the split view keeps the init script in a file of its own (CSP)
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


# --- schemathesis ---------------------------------------------------------------------------------------
# One test drives every operation in turn (schemathesis' pytest plugin predates pytest 9's node ids).

schemathesis.checks.load_all_checks()
# Every check schemathesis has (issue 19): server errors, schema and status conformance, negative and
# positive data, missing headers, unsupported methods, ignored auth, object-level authorisation...
CHECKS = schemathesis.checks.CHECKS.get_all()


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler without its per-request connection closing, which would close the test's
    transaction under it (Django's own test client disconnects the same two receivers)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _fuzz(operation, headers: dict[str, str], seen: set[int]) -> None:
    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=6,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case):
        seen.add(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

    check()


def test_api_matches_its_schema_as_an_administrator(db, wsgi_app, administrator, account_manager, settings):
    # Generated cases hit every operation many times: lift the rate limits for this test only.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100000/hour", "anon": "100000/hour"},
    }
    escalation = make_escalation(client=make_client(account_manager))
    make_escalation(route="standard")
    make_decision(escalation.rule_version, "change_order", escalation.subject_id)
    ConnectionFactory(slug="books", kind="quickbooks")
    token, _ = Token.objects.get_or_create(user=administrator)
    headers = {"Authorization": f"Token {token.key}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        _fuzz(operation, headers, statuses.setdefault(operation.label, set()))
    # The run reached real data, not only 400s and 404s: every list answered 200 at least once.
    lists = [label for label in statuses if label.startswith("GET") and not label.endswith("}/")]
    assert lists and all(200 in statuses[label] for label in lists), statuses
