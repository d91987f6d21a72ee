"""What the list endpoints return and filter, and that each runs a fixed number of queries."""

from __future__ import annotations

import itertools
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.connectors.models import StreamState
from apps.escalations.models import Escalation
from apps.rules.models import EvaluationRun
from tests.factories import ConnectionFactory, ProjectFactory

from .conftest import link, make_client, make_decision, make_escalation, make_rule

# --- contents and filters ---------------------------------------------------------------------------


def test_clients_and_projects_carry_their_ids_in_every_source_system(as_persona):
    client = make_client(name="Harborview")
    project = ProjectFactory(client=client, number="P-777")
    link(client, slug="books", object_type="customer", external_id="QB-C-9")
    link(project, slug="books", object_type="job", external_id="QB-J-4")
    api = as_persona("executive")

    body = api.get(f"/api/clients/{client.pk}/").json()
    assert body["source_ids"] == [
        {"system": "crm", "kind": "hubspot", "object_type": "client", "external_id": client.external_id,
         "primary": True},
        {"system": "books", "kind": "quickbooks", "object_type": "customer", "external_id": "QB-C-9",
         "primary": False},
    ]  # fmt: skip
    body = api.get(f"/api/projects/{project.pk}/").json()
    assert [(s["system"], s["object_type"], s["external_id"]) for s in body["source_ids"]] == [
        ("pm", "project", project.external_id),
        ("books", "job", "QB-J-4"),
    ]
    assert body["client"] == {"id": client.pk, "name": "Harborview"}


def test_flagged_means_an_open_escalation(as_persona):
    open_one = make_escalation()
    closed = make_escalation(status=Escalation.Status.RESOLVED)
    quiet = ProjectFactory()
    api = as_persona("ops_manager")

    flagged = api.get("/api/projects/", {"flagged": "true"}).json()
    assert [p["id"] for p in flagged["results"]] == [open_one.project_id]
    assert flagged["results"][0]["flagged"] is True
    unflagged = {p["id"] for p in api.get("/api/projects/", {"flagged": "false"}).json()["results"]}
    assert unflagged == {closed.project_id, quiet.pk}
    clients = api.get("/api/clients/", {"flagged": "true"}).json()["results"]
    assert [c["id"] for c in clients] == [open_one.client_id]


def test_escalation_filters(as_persona):
    client = make_client()
    high = make_escalation(client=client, severity="high")
    low_standard = make_escalation(severity="low", route="standard")
    done = make_escalation(client=client, status=Escalation.Status.RESOLVED)
    api = as_persona("executive")

    def ids(**params) -> set[int]:
        response = api.get("/api/escalations/", params)
        assert response.status_code == 200, response.content
        return {e["id"] for e in response.json()["results"]}

    assert ids() == {high.pk, low_standard.pk, done.pk}
    assert ids(status="resolved") == {done.pk}
    assert ids(route="standard") == {low_standard.pk}
    assert ids(severity="high", status="open") == {high.pk}
    assert ids(client=client.pk) == {high.pk, done.pk}
    assert ids(project=low_standard.project_id) == {low_standard.pk}
    assert ids(open="true") == {high.pk, low_standard.pk}


@pytest.mark.parametrize("params", [{"status": "bogus"}, {"client": "abc"}, {"severity": "urgent"}])
def test_bad_filter_values_are_400_with_field_errors(as_persona, params):
    response = as_persona("executive").get("/api/escalations/", params)
    assert response.status_code == 400
    assert set(response.json()["error"]["detail"]) == set(params)


def test_decisions_for_one_subject(as_persona):
    version = make_rule()
    mine = [
        make_decision(version, "change_order", 41),
        make_decision(version, "change_order", 41, "not_matched"),
    ]
    make_decision(version, "change_order", 42)
    make_decision(version, "project", 41)
    body = (
        as_persona("executive")
        .get("/api/decisions/", {"subject_type": "change_order", "subject_id": 41})
        .json()
    )
    assert body["count"] == 2
    assert [d["id"] for d in body["results"]] == [d.pk for d in reversed(mine)]
    assert body["results"][0]["rule"] == version.rule.key and body["results"][0]["rule_version"] == 1


def test_evaluation_runs_that_evaluated_one_subject(as_persona):
    version = make_rule()
    now = timezone.now()

    def run(ids: list[int], subject_type: str = "change_order") -> EvaluationRun:
        counts = {"rule": version.rule.key, "version": 1, "rule_version_id": version.pk, "matched": 0}
        return EvaluationRun.objects.create(
            subject_type=subject_type, trigger="schedule", evaluated_at=now, subjects=len(ids),
            subject_ids=ids, outcomes=[counts],
        )  # fmt: skip

    mine = [run([40, 41, 42]), run([41])]
    run([40, 42])
    run([41], "project")
    body = (
        as_persona("executive")
        .get("/api/evaluation-runs/", {"subject_type": "change_order", "subject_id": 41})
        .json()
    )
    assert [r["id"] for r in body["results"]] == [r.pk for r in reversed(mine)]
    assert body["results"][1]["subjects"] == 3
    assert body["results"][1]["outcomes"][0]["rule"] == version.rule.key
    assert "subject_ids" not in body["results"][0]  # 100k of them in a nightly run


def test_rules_show_their_live_version(as_persona):
    version = make_rule(route="standard")
    body = as_persona("ops_manager").get("/api/rules/").json()
    (rule,) = body["results"]
    assert rule["key"] == version.rule.key
    assert rule["live_version"]["number"] == 1
    assert rule["live_version"]["spec"]["route"] == "standard"


def test_pagination(as_persona):
    for _ in range(3):
        make_escalation()
    body = as_persona("executive").get("/api/escalations/", {"page_size": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]
    response = as_persona("executive").get("/api/escalations/", {"page": 9})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# --- connections never show secrets -----------------------------------------------------------------


def test_connections_never_show_credentials_or_webhook_secrets(as_persona, administrator):
    conn = ConnectionFactory(
        slug="books", kind="quickbooks", base_url="https://svc:hunter2@qbo.example.test/v3"
    )
    conn.credentials = {"access_token": "tok-SECRET-123", "refresh_token": "ref-SECRET-456"}
    conn.webhook_secrets = ["whsec-SECRET-789", "whsec-OLD-000"]
    conn.options = {"realm_id": "1234"}
    conn.save()
    StreamState.objects.create(connection=conn, stream="customers", record_count=3)
    secrets = [
        "SECRET",
        "whsec",
        "hunter2",
        "svc:",
        conn.credentials_encrypted,
        conn.webhook_secret_encrypted,
    ]

    for persona in ("administrator", "ops_manager", "executive"):
        api = as_persona(persona)
        for path in ("/api/connections/", "/api/connections/books/"):
            response = api.get(path)
            assert response.status_code == 200
            text = response.content.decode()
            assert not [s for s in secrets if s in text], text
    body = as_persona("administrator").get("/api/connections/books/").json()
    assert body["base_url"] == "https://qbo.example.test/v3"
    assert body["has_credentials"] is True and body["has_webhook_secret"] is True
    assert body["streams"] == [{"stream": "customers", "last_success_at": None, "record_count": 3}]
    assert not {"credentials", "credentials_encrypted", "webhook_secret_encrypted", "options"} & set(body)
    schema = as_persona("administrator").get("/api/schema/?format=json").json()
    assert set(schema["components"]["schemas"]["Connection"]["properties"]) == {
        "slug", "kind", "base_url", "schedule", "enabled", "has_credentials", "has_webhook_secret", "streams",
        "created_at", "updated_at",
    }  # fmt: skip
    assert "credentials_encrypted" not in json.dumps(schema)


# --- query counts -------------------------------------------------------------------------------------


_serial = itertools.count()


def _fill(n: int) -> None:
    """``n`` escalations on ``n`` projects of ``n`` clients, each linked in a second system, with
    decisions, rules and connections with streams."""
    for _ in range(n):
        i = next(_serial)
        escalation = make_escalation()
        link(escalation.client, slug=f"books{i % 3}", external_id=f"C{i}")
        link(escalation.project, slug=f"books{i % 3}", object_type="job", external_id=f"J{i}")
        make_decision(escalation.rule_version, "change_order", escalation.subject_id)
        StreamState.objects.create(connection=ConnectionFactory(slug=f"c{i}"), stream="s")


LIST_PATHS = [
    "/api/escalations/",
    "/api/escalations/?status=open&severity=high",
    "/api/clients/",
    "/api/projects/?flagged=true",
    "/api/decisions/",
    "/api/rules/",
    "/api/connections/",
]
# Token and user, the user's roles, COUNT, the page, one prefetch per to-many; escalations add the
# scoping role check of ``visible_to`` and one IN query per related table (rule, version, client, project).
MAX_QUERIES = 9


def _count(api, path: str, rows: int) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = api.get(path, {"page_size": 100})
    assert response.status_code == 200
    assert len(response.json()["results"]) >= rows, path
    return len(ctx.captured_queries)


@pytest.mark.parametrize("persona", ["executive", "account_manager"])
def test_list_endpoints_run_a_fixed_number_of_queries(
    as_persona, persona, account_manager, django_assert_max_num_queries
):
    api = as_persona(persona)
    paths = LIST_PATHS if persona == "executive" else LIST_PATHS[:4]
    if persona == "account_manager":
        make_escalation(client=make_client(account_manager))
    _fill(2)
    small = {path: _count(api, path, 1) for path in paths}
    if persona == "account_manager":
        for _ in range(32):
            make_escalation(client=make_client(account_manager))
    _fill(32)
    for path in paths:
        with django_assert_max_num_queries(MAX_QUERIES):
            large = _count(api, path, 30)
        assert large == small[path], f"{path}: {small[path]} queries for a few rows, {large} for 30+"
