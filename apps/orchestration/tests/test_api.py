"""``GET /api/orchestration/``: the map as JSON, its roles, its window, its place in the OpenAPI schema."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.connectors.models import StreamState, SyncRun
from apps.orchestration.map import build_map
from tests.factories import ConnectionFactory

from .load import publish_rule

pytestmark = pytest.mark.django_db
URL = "/api/orchestration/"


def api(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def company():
    pm = ConnectionFactory(slug="pm", kind="procore", options={"company_id": 1})
    StreamState.objects.create(connection=pm, stream="change_orders", last_success_at=timezone.now())
    started = timezone.now() - dt.timedelta(hours=3)
    SyncRun.objects.create(
        connection=pm, stream="change_orders", status="succeeded", started_at=started, heartbeat_at=started,
        counts={"seen": 40},
    )  # fmt: skip
    publish_rule("co", "Big change order", "change_order", ["change_order.amount"], ["flag_dashboard"])
    return pm


def test_the_map_as_json_is_the_pages_graph(executive, company):
    response = api(executive).get(URL, {"window": "24h"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"window", "since", "now", "counts", "nodes", "edges"}
    assert body["window"] == "24h" and body["counts"]["records"] == 40 and body["counts"]["rules"] == 1
    nodes = {n["id"]: n for n in body["nodes"]}
    assert {n.id for n in build_map("24h").nodes} == set(nodes)
    stream = nodes[f"stream:{company.pk}:change_orders"]
    assert stream["counts"]["records"] == 40 and stream["health"] == "ok"
    assert {"label": "Connection", "url": f"/admin/connectors/connection/{company.pk}/change/"} in stream[
        "links"
    ]
    edges = {(e["source"], e["target"]): e for e in body["edges"]}
    assert edges[("fact:change_order.amount", "rule:co")] == {
        "source": "fact:change_order.amount", "target": "rule:co", "count": None, "configured": True,
    }  # fmt: skip
    assert edges[(f"system:{company.pk}", f"stream:{company.pk}:change_orders")]["count"] == 40


def test_the_window_changes_the_counts_and_a_bad_one_is_refused(ops_manager, company):
    client = api(ops_manager)
    assert client.get(URL, {"window": "1h"}).json()["counts"]["records"] == 0
    assert client.get(URL).json()["window"] == "24h"
    bad = client.get(URL, {"window": "30d"})
    assert bad.status_code == 400 and bad.json()["error"]["detail"] == {"window": "one of 1h, 24h, 7d"}


@pytest.mark.parametrize(
    ("persona", "status"), [("administrator", 200), ("account_manager", 403), ("outsider", 403)]
)
def test_who_may_read_the_map(request, persona, status, company):
    assert api(request.getfixturevalue(persona)).get(URL).status_code == status


def test_anonymous_callers_are_asked_to_authenticate():
    assert APIClient().get(URL).status_code == 401


def test_the_schema_documents_the_endpoint(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/orchestration/"]["get"]
    assert {"200", "400", "401", "403", "429"} <= set(operation["responses"])
    window = next(p for p in operation["parameters"] if p["name"] == "window")
    assert window["schema"]["enum"] == ["1h", "24h", "7d"]
    graph = schema["components"]["schemas"]["Graph"]
    assert {"nodes", "edges", "counts"} <= set(graph["properties"])
