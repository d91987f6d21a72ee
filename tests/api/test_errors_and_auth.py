"""Token and session auth, throttling, and one JSON error shape for every failure."""

from __future__ import annotations

from unittest import mock

import pytest
from django.test import Client as DjangoClient
from rest_framework.test import APIClient

from .conftest import make_escalation, token_client


def _error(response, status: int, code: str, content_type: str = "application/json") -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(content_type)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def test_token_auth(db, executive):
    make_escalation()
    assert token_client(executive).get("/api/escalations/").json()["count"] == 1
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    _error(bad.get("/api/escalations/"), 401, "authentication_failed")


def test_session_auth(db, executive):
    browser = DjangoClient()
    browser.force_login(executive)
    assert browser.get("/api/escalations/").status_code == 200


def test_inactive_users_token_is_refused(db, executive):
    api = token_client(executive)
    executive.is_active = False
    executive.save(update_fields=["is_active"])
    _error(api.get("/api/escalations/"), 401, "authentication_failed")


def test_error_shapes(db, as_persona):
    api = as_persona("executive")
    _error(APIClient().get("/api/escalations/"), 401, "not_authenticated")
    _error(as_persona("outsider").get("/api/escalations/"), 403, "permission_denied")
    _error(api.get("/api/escalations/999999/"), 404, "not_found")
    _error(api.get("/api/no-such-thing/"), 404, "not_found")
    _error(api.delete("/api/escalations/"), 405, "method_not_allowed")
    detail = _error(api.get("/api/escalations/", {"route": "sideways"}), 400, "invalid")["detail"]
    assert list(detail) == ["route"]
    escalation = make_escalation(status="dismissed")
    _error(api.post(f"/api/escalations/{escalation.pk}/acknowledge", {}, format="json"), 409, "conflict")
    response = api.post(
        f"/api/escalations/{escalation.pk}/resolve", "not json", content_type="application/json"
    )
    _error(response, 400, "parse_error")


def test_unexpected_errors_are_500_in_the_same_shape_and_logged(db, as_persona):
    api = as_persona("executive")
    with (
        mock.patch("apps.api.views.EscalationViewSet.get_queryset", side_effect=RuntimeError("boom")),
        mock.patch("apps.api.exceptions.logger") as logger,
    ):
        response = api.get("/api/escalations/")
    _error(response, 500, "server_error")
    assert "boom" not in response.content.decode()  # no internals in the response
    (call,) = logger.exception.call_args_list
    assert str(call.kwargs["exc_info"]) == "boom"


@pytest.fixture
def low_rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "3/minute", "anon": "2/minute"},
    }


def test_users_are_throttled_with_a_json_429(low_rates, as_persona, executive):
    api = as_persona("executive")
    assert [api.get("/api/rules/").status_code for _ in range(3)] == [200, 200, 200]
    response = api.get("/api/rules/")
    error = _error(response, 429, "throttled")
    assert 0 < error["detail"]["wait"] <= 60
    assert int(response["Retry-After"]) == pytest.approx(error["detail"]["wait"], abs=1)
    # The limit is per user: someone else still gets through.
    assert as_persona("ops_manager").get("/api/rules/").status_code == 200


def test_anonymous_callers_are_throttled_on_the_public_schema(low_rates, db):
    # Elsewhere an anonymous call is refused (401) before throttling is even considered.
    anonymous = APIClient()
    schema = "/api/schema/?format=json"
    assert [anonymous.get(schema).status_code for _ in range(2)] == [200, 200]
    _error(anonymous.get(schema), 429, "throttled", content_type="application/vnd.oai.openapi+json")
