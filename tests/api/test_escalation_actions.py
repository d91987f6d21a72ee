"""The escalation actions change state through the services, record the API as the channel, and refuse
what the state machine refuses with a 409."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEntry
from apps.escalations.models import Escalation, EscalationEvent

from .conftest import make_client, make_escalation


@pytest.fixture
def marias(account_manager):
    """A standard-route change order of Maria's client: she and the operators may close it too."""
    return make_escalation(client=make_client(account_manager), route="standard")


def test_acknowledge_then_resolve_writes_events_via_api_and_audit(as_persona, account_manager, marias):
    api = as_persona("account_manager")
    response = api.post(f"/api/escalations/{marias.pk}/acknowledge", {"note": "on it"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "acknowledged"

    response = api.post(
        f"/api/escalations/{marias.pk}/resolve/",
        {"outcome": "actioned", "note": "called them"},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["outcome"]) == ("resolved", "actioned")
    assert [(e["kind"], e["via"], e["actor"], e["note"]) for e in body["events"]] == [
        ("acknowledged", "api", "maria", "on it"),
        ("resolved", "api", "maria", "called them"),
    ]
    marias.refresh_from_db()
    assert marias.status == Escalation.Status.RESOLVED and marias.closed_at is not None
    audit = AuditEntry.objects.filter(object_type="escalation", object_id=str(marias.pk)).order_by("pk")
    assert [(a.action, a.data["via"]) for a in audit] == [
        ("escalation.acknowledged", "api"),
        ("escalation.resolved", "api"),
    ]


def test_dismiss_defaults_to_false_alarm(as_persona, marias):
    response = as_persona("ops_manager").post(f"/api/escalations/{marias.pk}/dismiss", {}, format="json")
    assert response.status_code == 200
    marias.refresh_from_db()
    assert (marias.status, marias.outcome) == ("dismissed", "false_alarm")


def test_dismiss_accepts_a_dismiss_outcome(as_persona, marias):
    response = as_persona("ops_manager").post(
        f"/api/escalations/{marias.pk}/dismiss", {"outcome": "duplicate"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["outcome"] == "duplicate"


def test_a_closed_escalation_cannot_be_acknowledged_409(as_persona, account_manager):
    marias = make_escalation(client=make_client(account_manager))  # executive route: approve applies
    api = as_persona("executive")
    assert api.post(f"/api/escalations/{marias.pk}/dismiss", {}, format="json").status_code == 200
    events_before = EscalationEvent.objects.filter(escalation=marias).count()

    for action, body in [("acknowledge", {}), ("resolve", {"outcome": "actioned"}), ("approve", {})]:
        response = api.post(f"/api/escalations/{marias.pk}/{action}", body, format="json")
        assert response.status_code == 409, (action, response.content)
        error = response.json()["error"]
        assert error["code"] == "conflict"
        assert "already dismissed" in error["message"] or "only open" in error["message"]
    assert EscalationEvent.objects.filter(escalation=marias).count() == events_before


def test_acknowledging_twice_is_a_conflict(as_persona, marias):
    api = as_persona("account_manager")
    assert api.post(f"/api/escalations/{marias.pk}/acknowledge", {}, format="json").status_code == 200
    response = api.post(f"/api/escalations/{marias.pk}/acknowledge", {}, format="json")
    assert response.status_code == 409
    assert "only open escalations can be acknowledged" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"outcome": "auto_resolved"},
        {"outcome": "approved"},
        {"outcome": "nonsense"},
        {"note": "x" * 2001},
    ],
)
def test_resolve_validates_its_body(as_persona, marias, body):
    response = as_persona("account_manager").post(
        f"/api/escalations/{marias.pk}/resolve", body, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["detail"]) <= {"outcome", "note"} and error["detail"]
    marias.refresh_from_db()
    assert marias.status == Escalation.Status.OPEN


def test_executive_approves_and_rejects_change_orders(as_persona, account_manager):
    approved = make_escalation(client=make_client(account_manager))
    rejected = make_escalation(client=make_client(account_manager))
    api = as_persona("executive")
    response = api.post(f"/api/escalations/{approved.pk}/approve", {"note": "fine"}, format="json")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["outcome"]) == ("resolved", "approved")
    response = api.post(f"/api/escalations/{rejected.pk}/reject", {}, format="json")
    assert response.json()["outcome"] == "rejected"
    kinds = EscalationEvent.objects.filter(escalation__in=[approved, rejected]).values_list("via", "actor")
    assert sorted(kinds) == [("api", "elena"), ("api", "elena")]


def test_standard_route_and_non_change_orders_are_not_approved(db, as_persona):
    standard = make_escalation(route="standard")
    on_project = make_escalation(subject_type="project")
    api = as_persona("executive")
    assert api.post(f"/api/escalations/{standard.pk}/approve", {}, format="json").status_code == 409
    assert api.post(f"/api/escalations/{on_project.pk}/reject", {}, format="json").status_code == 409
    assert Escalation.objects.filter(status="open").count() == 2


def test_actions_need_post(as_persona, marias):
    response = as_persona("executive").get(f"/api/escalations/{marias.pk}/acknowledge")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_session_auth_needs_the_csrf_token(client, account_manager, marias):
    from django.test import Client as DjangoClient

    browser = DjangoClient(enforce_csrf_checks=True)
    browser.force_login(account_manager)
    response = browser.post(f"/api/escalations/{marias.pk}/acknowledge", {}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    assert browser.get(f"/api/escalations/{marias.pk}/").status_code == 200


@pytest.mark.parametrize("body", [{}, {"note": ""}, {"note": "   "}])
def test_a_note_needs_its_text(as_persona, marias, body):
    response = as_persona("account_manager").post(f"/api/escalations/{marias.pk}/note", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["detail"]["note"]
    assert not EscalationEvent.objects.filter(escalation=marias).exists()


def test_account_managers_add_notes_to_an_executive_decision_they_cannot_take(as_persona, account_manager):
    waiting = make_escalation(client=make_client(account_manager))  # executive route
    api = as_persona("account_manager")
    response = api.post(f"/api/escalations/{waiting.pk}/note", {"note": "client called"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "open"
    assert [(e["kind"], e["note"]) for e in response.json()["events"]] == [("noted", "client called")]
    refused = api.post(f"/api/escalations/{waiting.pk}/dismiss", {}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert "Executives and Administrators" in refused.json()["error"]["message"]
