"""Decision rights, role × action × route × channel (SPEC "Who uses it").

A change order on the executive route waits for an executive decision: only Executives and Administrators
approve, reject, resolve or dismiss it; account managers (and operations managers) acknowledge it and add
notes. Approve and reject apply only to change orders on the executive route. Every channel answers alike:
the API 403 (JSON ``permission_denied``) / 409 (``conflict``), the pages a message, the email links a 403 /
409 page; a refusal changes nothing (no state, no event, no audit entry, no outbox row). Admin has no
escalation actions (its escalation pages are read-only), so there is no admin column.
"""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from apps.audit.models import AuditEntry
from apps.escalations.links import link_token
from apps.escalations.models import Delivery, Escalation

from .helpers import make_escalation

pytestmark = pytest.mark.django_db

ROLES = ("account_manager", "ops_manager", "executive", "administrator")
ACTIONS = ("acknowledge", "note", "resolve", "dismiss", "approve", "reject")
# What each escalation is: (route, subject type).
KINDS = {
    "executive change order": ("executive", "change_order"),
    "standard change order": ("standard", "change_order"),
    "executive project": ("executive", "project"),
}
DECIDERS = {"executive", "administrator"}
# (status, outcome, event kind) once the action is done.
DONE = {
    "acknowledge": ("acknowledged", "", "acknowledged"),
    "note": ("open", "", "noted"),
    "resolve": ("resolved", "actioned", "resolved"),
    "dismiss": ("dismissed", "false_alarm", "dismissed"),
    "approve": ("resolved", "approved", "approved"),
    "reject": ("resolved", "rejected", "rejected"),
}
BODY = {"resolve": {"outcome": "actioned"}, "note": {"note": "called the client"}}


def expected(role: str, action: str, kind: str) -> int:
    """200 done, 403 not this role's decision, 409 not something that can be approved or rejected."""
    route, subject = KINDS[kind]
    executive_change_order = route == "executive" and subject == "change_order"
    if action in ("approve", "reject"):
        if role not in DECIDERS:
            return 403
        return 200 if executive_change_order else 409
    if action in ("resolve", "dismiss") and executive_change_order and role not in DECIDERS:
        return 403
    return 200


@pytest.fixture
def people(account_manager, ops_manager, executive, administrator):
    return {
        "account_manager": account_manager,
        "ops_manager": ops_manager,
        "executive": executive,
        "administrator": administrator,
    }


def _escalation(kind: str, owner) -> Escalation:
    route, subject = KINDS[kind]
    escalation = make_escalation(owner_user=owner, route=route)
    if subject == "project":
        Escalation.objects.filter(pk=escalation.pk).update(
            subject_type="project", subject_id=escalation.project_id
        )
        escalation.refresh_from_db()
    return escalation


def _unchanged(escalation: Escalation) -> None:
    escalation.refresh_from_db()
    assert (escalation.status, escalation.outcome) == ("open", "")
    assert not escalation.events.exists()
    assert not AuditEntry.objects.filter(object_type="escalation", object_id=str(escalation.pk)).exists()
    assert not Delivery.objects.filter(escalation=escalation).exists()


def _done(escalation: Escalation, action: str, via: str, user) -> None:
    escalation.refresh_from_db()
    status, outcome, kind = DONE[action]
    assert (escalation.status, escalation.outcome) == (status, outcome)
    event = escalation.events.get()
    assert (event.kind, event.via, event.actor) == (kind, via, user.get_username())
    assert AuditEntry.objects.filter(
        action=f"escalation.{kind}", object_id=str(escalation.pk), actor_user_id=user.pk
    ).exists()


def _case_ids(role: str, action: str, kind: str) -> str:
    return f"{role}-{action}-{kind.replace(' ', '_')}"


CASES = [(r, a, k) for r in ROLES for a in ACTIONS for k in KINDS]


@pytest.mark.parametrize(("role", "action", "kind"), CASES, ids=[_case_ids(*c) for c in CASES])
def test_api(people, role, action, kind):
    escalation = _escalation(kind, people["account_manager"])
    api = APIClient()
    api.force_authenticate(people[role])
    response = api.post(f"/api/escalations/{escalation.pk}/{action}", BODY.get(action, {}), format="json")
    want = expected(role, action, kind)
    assert response.status_code == want, response.content
    if want == 200:
        _done(escalation, action, "api", people[role])
        return
    code = {403: "permission_denied", 409: "conflict"}[want]
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]
    _unchanged(escalation)


@pytest.mark.parametrize(("role", "action", "kind"), CASES, ids=[_case_ids(*c) for c in CASES])
def test_page(people, role, action, kind):
    escalation = _escalation(kind, people["account_manager"])
    browser = Client()
    browser.force_login(people[role])
    detail = reverse("escalation-detail", args=[escalation.pk])
    want = expected(role, action, kind)
    # The buttons offered are exactly the allowed actions.
    offered = f'value="{action}"' in browser.get(detail).content.decode()
    assert offered is (want == 200)
    data = {"action": action, "next": detail, "confirmed": action, **BODY.get(action, {})}
    response = browser.post(reverse("escalation-act", args=[escalation.pk]), data)
    assert response.status_code == 302 and response["Location"] == detail
    [message] = list(get_messages(response.wsgi_request))
    if want == 200:
        assert message.level_tag == "success"
        _done(escalation, action, "web", people[role])
        return
    assert message.level_tag == "error" and "was not changed" in message.message
    if want == 403:
        assert "Executives and Administrators" in message.message
    else:
        assert "executive route" in message.message
    _unchanged(escalation)


LINK_CASES = [c for c in CASES if c[1] != "note"]  # notes are added on the page or the API, not by email


@pytest.mark.parametrize(("role", "action", "kind"), LINK_CASES, ids=[_case_ids(*c) for c in LINK_CASES])
def test_email_link(people, role, action, kind):
    escalation = _escalation(kind, people["account_manager"])
    person = people[role]
    url = reverse(
        "escalation-link", args=[link_token(escalation=escalation, action=action, recipient=person.email)]
    )
    want = expected(role, action, kind)
    browser = Client()
    # GET refuses up front (nothing to confirm); POST refuses the same way.
    assert browser.get(url).status_code == want
    response = browser.post(url, BODY.get(action, {}))
    assert response.status_code == want
    if want == 200:
        _done(escalation, action, "email", person)
        return
    page = response.content.decode()
    assert "Nothing was done" in page
    _unchanged(escalation)
