"""Role × endpoint matrix: every persona of the root conftest against every endpoint, allowed and denied."""

from __future__ import annotations

from unittest import mock

import pytest
from rest_framework.test import APIClient

from apps.escalations.models import Escalation

from .conftest import PERSONAS, make_client, make_decision, make_escalation, make_rule

ALL_ROLES = {"ops_manager", "executive", "administrator", "account_manager", "other_account_manager"}
SEE_ALL = {"ops_manager", "executive", "administrator"}
LISTS = {
    "/api/escalations/": ALL_ROLES,
    "/api/clients/": ALL_ROLES,
    "/api/projects/": ALL_ROLES,
    "/api/decisions/": SEE_ALL,
    "/api/evaluation-runs/": SEE_ALL,
    "/api/rules/": SEE_ALL,
    "/api/connections/": SEE_ALL,
}


@pytest.mark.parametrize("path", sorted(LISTS))
@pytest.mark.parametrize("persona", PERSONAS)
def test_list_endpoints_follow_the_roles(as_persona, persona, path):
    response = as_persona(persona).get(path)
    expected = 200 if persona in LISTS[path] else 403
    assert response.status_code == expected, response.content
    if expected == 403:
        assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("path", [*sorted(LISTS), "/api/escalations/1/", "/api/connections/x/resync"])
def test_anonymous_calls_get_401_with_a_token_challenge(db, path):
    client = APIClient()
    response = client.post(path) if path.endswith("resync") else client.get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.fixture
def marias(account_manager):
    """An escalation, its client and project, belonging to maria (account_manager)."""
    client = make_client(account_manager)
    return make_escalation(client=client)


@pytest.mark.parametrize("persona", PERSONAS)
def test_one_escalation_client_and_project_by_id(as_persona, persona, marias):
    expected = {
        "account_manager": 200,
        "other_account_manager": 404,  # probing another manager's object by id
        "outsider": 403,
    }.get(persona, 200)
    api = as_persona(persona)
    for path in (
        f"/api/escalations/{marias.pk}/",
        f"/api/clients/{marias.client_id}/",
        f"/api/projects/{marias.project_id}/",
    ):
        response = api.get(path)
        assert response.status_code == expected, (path, response.content)
        if expected == 404:
            assert response.json()["error"]["code"] == "not_found"


def test_account_managers_list_only_their_own_clients_rows(
    as_persona, account_manager, other_account_manager
):
    mine = make_escalation(client=make_client(account_manager))
    theirs = make_escalation(client=make_client(other_account_manager))
    api = as_persona("account_manager")
    assert [e["id"] for e in api.get("/api/escalations/").json()["results"]] == [mine.pk]
    assert [c["id"] for c in api.get("/api/clients/").json()["results"]] == [mine.client_id]
    assert [p["id"] for p in api.get("/api/projects/").json()["results"]] == [mine.project_id]
    everyone = {e["id"] for e in as_persona("executive").get("/api/escalations/").json()["results"]}
    assert everyone == {mine.pk, theirs.pk}


@pytest.mark.parametrize("persona", PERSONAS)
def test_acknowledge_by_role(as_persona, persona, marias):
    response = as_persona(persona).post(f"/api/escalations/{marias.pk}/acknowledge", {}, format="json")
    expected = {"other_account_manager": 404, "outsider": 403}.get(persona, 200)
    assert response.status_code == expected, response.content
    marias.refresh_from_db()
    changed = marias.status == Escalation.Status.ACKNOWLEDGED
    assert changed is (expected == 200)


@pytest.mark.parametrize("persona", PERSONAS)
def test_approve_is_for_executives_and_administrators(as_persona, persona, marias):
    response = as_persona(persona).post(f"/api/escalations/{marias.pk}/approve", {}, format="json")
    # Another manager's escalation is out of their scope, so 404 as for every other action (the service's
    # 403 is for a role that sees the escalation but may not decide it).
    expected = {"executive": 200, "administrator": 200, "other_account_manager": 404}.get(persona, 403)
    assert response.status_code == expected, response.content
    marias.refresh_from_db()
    assert (marias.outcome == Escalation.Outcome.APPROVED) is (expected == 200)


@pytest.mark.parametrize("persona", PERSONAS)
def test_resync_is_for_administrators_only(db, as_persona, persona):
    from tests.factories import ConnectionFactory

    ConnectionFactory(slug="crm-main", kind="hubspot")
    with mock.patch("apps.connectors.tasks.sync_connection_task.delay") as delay:
        response = as_persona(persona).post("/api/connections/crm-main/resync", {}, format="json")
    expected = 202 if persona == "administrator" else 403
    assert response.status_code == expected, response.content
    if expected == 403:
        assert response.json()["error"]["code"] == "permission_denied"
        delay.assert_not_called()


def test_decisions_and_rules_are_visible_to_the_roles_that_see_everything(as_persona, marias):
    version = make_rule()
    make_decision(version, "change_order", marias.subject_id)
    for persona in SEE_ALL:
        api = as_persona(persona)
        assert api.get("/api/decisions/").json()["count"] == 1
        assert api.get(f"/api/rules/{version.rule.key}/").status_code == 200


@pytest.mark.parametrize("persona", PERSONAS)
def test_role_grants_answers_what_has_perm_answers(db, request, persona):
    """The permission check reads the role table instead of querying; the groups must agree with it."""
    from django.contrib.auth.models import Permission

    from apps.api.permissions import role_grants

    user = request.getfixturevalue(persona)
    if user.is_superuser:  # has_perm is always true for a superuser; the role table is the narrower rule
        user.is_superuser = False
    for perm in Permission.objects.select_related("content_type"):
        name = f"{perm.content_type.app_label}.{perm.codename}"
        assert role_grants(user, name) == user.has_perm(name), name
