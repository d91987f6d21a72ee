"""Procore contract: the published shapes (``contracts/procore/``) hold the connector and the simulator.

- A conversation built from the documented list schemas, paging and rate-limit headers is replayed over
  loopback HTTP; the connector syncs it, and every request it sent is one the reference documents.
- The simulator's answers validate against the same schemas, and a sync against it sends only documented
  requests.
- The documented webhook payload examples (v2.0, v3.0, v4.0) validate and are read.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from apps.connectors.kinds import KINDS
from apps.connectors.models import Connection, QuarantinedRecord
from apps.connectors.services import connection_import, sync_connection
from apps.connectors.webhooks import schemes
from apps.entities.models import ChangeOrder, Milestone, Project, Submittal, Vendor
from apps.simulator import PROCORE_COMPANY_ID, SimulatorServer, generate_company
from apps.simulator.procore import SCHEDULE_CRITICAL_FIELD
from apps.simulator.webhooks import procore_event

from . import assert_conforms, example, load

VENDOR = "procore"
SCHEMAS = {
    "/rest/v1.0/projects": "project.schema.json",
    "/rest/v1.0/vendors": "vendor.schema.json",
    "/rest/v1.0/tasks": "task.schema.json",
    "/rest/v1.0/change_order_packages": "change_order_package.schema.json",
    "submittals": "submittal.schema.json",
}


def schema_for(path: str) -> str:
    return SCHEMAS["submittals"] if path.endswith("/submittals") else SCHEMAS[path]


# ---- the documented conversation, replayed ---------------------------------------------------------------


class Replay(ThreadingHTTPServer):
    """Serves ``conversation.json``: the exchange with the same method and path whose query keys all match
    (the most specific one); anything else is 404 like Procore. Records every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReplayHandler)
        self.conversation = load(VENDOR, "conversation.json")
        self.seen: list[tuple[str, str, dict[str, list[str]], dict[str, str]]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> dict[str, Any] | None:
        flat = {"page": "1", **{k: v[-1] for k, v in query.items()}}
        matching = [
            e
            for e in self.conversation["exchanges"]
            if e["method"] == method
            and e["path"] == path
            and all(flat.get(k) == v for k, v in e["query"].items())
        ]
        return max(matching, key=lambda e: len(e["query"]), default=None)


class _ReplayHandler(BaseHTTPRequestHandler):
    server: Replay

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        self.server.seen.append(("GET", parts.path, query, dict(self.headers.items())))
        exchange = self.server.answer("GET", parts.path, query)
        if exchange is None:
            status, headers, body = 404, {}, {"errors": "Not Found"}
        else:
            status, headers, body = exchange["status"], exchange["headers"], exchange["body"]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value.replace("{base}", self.server.base))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def replay() -> Iterator[Replay]:
    server = Replay()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _connection(base_url: str, company_id: str, **options: Any) -> Connection:
    [connection] = connection_import(
        data=[
            {
                "slug": "pm",
                "kind": "procore",
                "base_url": base_url,
                "credentials": {"access_token": "documented-token"},
                "options": {
                    "company_id": company_id,
                    "settle_seconds": 0,
                    "rate_budget": False,
                    "field_map": {"schedule_critical": "598134325"},
                    **options,
                },
            }
        ],
        actor="system:test",
    )
    return connection


def assert_documented_request(
    method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]
) -> None:
    spec = load(VENDOR, "endpoints.json")
    matching = [e for e in spec["endpoints"] if e["method"] == method and re.match(e["path"], path)]
    assert matching, f"{method} {path} is not a documented Procore endpoint"
    [endpoint] = matching
    keys = set(query)
    assert set(endpoint["required"]) <= keys, (
        f"{endpoint['name']}: missing {set(endpoint['required']) - keys}"
    )
    assert keys <= set(endpoint["allowed"]), (
        f"{endpoint['name']}: undocumented {keys - set(endpoint['allowed'])}"
    )
    lowered = {k.lower() for k in headers}
    assert all(h.lower() in lowered for h in spec["headers"]), f"{method} {path}: headers {sorted(headers)}"
    window = query.get("filters[updated_at]")
    if window:  # an ISO 8601 range "<start>...<end>" (filtering_on_list_actions.md)
        start, _, end = window[-1].partition("...")
        assert dt.datetime.fromisoformat(start) <= dt.datetime.fromisoformat(end)


def test_the_documented_examples_conform_to_the_schemas() -> None:
    for exchange in load(VENDOR, "conversation.json")["exchanges"]:
        for record in exchange["body"]:
            schema = (
                "project.schema.json"
                if "serializer_view" in exchange["query"]
                else schema_for(exchange["path"])
            )
            assert_conforms(VENDOR, schema, record)


def test_documented_conversation_syncs_through_the_connector(db: Any, replay: Replay) -> None:
    connection = _connection(replay.base, replay.conversation["company_id"], per_page=1)

    runs = sync_connection(connection=connection)

    assert {r.stream: r.status for r in runs} == dict.fromkeys(
        ["projects", "vendors", "milestones", "change_orders", "submittals"], "succeeded"
    ), [r.error for r in runs]
    # No project is quarantined for lacking a schedule status (Procore's projects have none).
    assert not QuarantinedRecord.objects.exists()
    assert sorted(Project.objects.values_list("external_id", "schedule_status")) == [
        ("14406", ""),
        ("225096", ""),
    ]
    riverside = Project.objects.get(external_id="14406")
    assert riverside.contract_value == Decimal("1250000.50") and riverside.accounting_ref == "QB-77"
    assert Vendor.objects.get(external_id="3968037").email == "bids@joeyscivil.example"
    # Only the task flagged milestone, under the project it was listed under; due = finish_datetime.
    [milestone] = Milestone.objects.all()
    assert (milestone.external_id, milestone.project_ref) == ("91001", "14406")
    assert (milestone.due_date, milestone.completed_date) == (dt.date(2026, 10, 15), dt.date(2026, 10, 20))
    # Every documented status maps to a normalised one; project_ref comes from the listing.
    assert sorted(ChangeOrder.objects.values_list("external_id", "project_ref", "status", "amount")) == [
        ("71001", "14406", "pending", Decimal("60000.00")),  # not_pricing
        ("71002", "14406", "approved", Decimal("0.00")),  # no_charge
        ("72001", "225096", "pending", Decimal("18250.75")),  # proceeding
        ("72002", "225096", "void", Decimal("-4200.00")),
    ]
    # Returned when the last required approver returned it; critical through the mapped custom field.
    [submittal] = Submittal.objects.all()
    assert (submittal.project_ref, submittal.vendor_ref, submittal.revision) == ("225096", "3968037", 1)
    assert submittal.returned_date == dt.date(2026, 5, 4) and submittal.schedule_critical is True
    # Several pages per list were followed by their Link headers.
    pages = [(path, q.get("page", ["1"])[-1]) for _, path, q, _ in replay.seen]
    assert ("/rest/v1.0/change_order_packages", "2") in pages and ("/rest/v1.0/projects", "2") in pages


def test_the_connector_sends_only_documented_requests(db: Any, replay: Replay) -> None:
    connection = _connection(replay.base, replay.conversation["company_id"], per_page=1)
    sync_connection(connection=connection)
    sync_connection(connection=connection)  # incremental: per-project windows from the saved cursors

    assert replay.seen
    for method, path, query, headers in replay.seen:
        assert_documented_request(method, path, query, headers)
        assert "sort" not in query  # no list we read documents a sort by updated_at
    incremental = [q for _, p, q, _ in replay.seen if p == "/rest/v1.0/change_order_packages"][-1]
    start = incremental["filters[updated_at]"][-1].partition("...")[0]
    assert start > "2026"  # the second run reads from the project's cursor, not from the beginning


def test_without_a_field_mapping_the_default_name_finds_nothing(db: Any, replay: Replay) -> None:
    connection = _connection(replay.base, replay.conversation["company_id"], per_page=1)
    connection.options = {**connection.options, "field_map": {}}
    connection.save(update_fields=["options"])

    sync_connection(connection=connection, streams=["submittals"])

    assert Submittal.objects.get().schedule_critical is False  # "schedule_critical" is no custom_field_<id>


# ---- the simulator, held to the same schemas ------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    company = generate_company(seed=7, scale=0.1, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    with SimulatorServer(company).start() as server:
        yield server


def _get(server: SimulatorServer, path: str) -> requests.Response:
    return requests.get(
        server.base_url + path,
        headers={"Authorization": "Bearer sim-procore-token", "Procore-Company-Id": str(PROCORE_COMPANY_ID)},
        timeout=10,
    )


def test_simulator_answers_conform_to_the_documented_schemas(simulator: SimulatorServer) -> None:
    company = simulator.company
    project = next(
        p for p in company.pc_projects if any(c.project_id == p for c in company.pc_change_orders.values())
    )
    lists = [
        f"/rest/v1.0/projects?company_id={PROCORE_COMPANY_ID}&per_page=1000",
        f"/rest/v1.0/vendors?company_id={PROCORE_COMPANY_ID}",
        f"/rest/v1.0/tasks?project_id={project}",
        f"/rest/v1.0/change_order_packages?project_id={project}",
        f"/rest/v1.1/projects/{project}/submittals",
    ]
    for path in lists:
        response = _get(simulator, path)
        assert response.status_code == 200, path
        assert {
            "Total",
            "Per-Page",
            "X-Rate-Limit-Limit",
            "X-Rate-Limit-Remaining",
            "X-Rate-Limit-Reset",
        } <= set(response.headers)
        assert response.json(), path
        for record in response.json():
            assert_conforms(VENDOR, schema_for(urlsplit(path).path), record)
    compact = _get(simulator, f"/rest/v1.0/projects?company_id={PROCORE_COMPANY_ID}&serializer_view=compact")
    assert_conforms(VENDOR, "project.schema.json", compact.json()[0])
    assert SCHEDULE_CRITICAL_FIELD.startswith("custom_field_")


def test_a_sync_against_the_simulator_sends_only_documented_requests(
    db: Any, simulator: SimulatorServer
) -> None:
    connection = _connection(simulator.base_url, str(PROCORE_COMPANY_ID), per_page=50)
    connection.credentials = {"access_token": "sim-procore-token"}
    connection.save()

    runs = sync_connection(connection=connection)

    assert all(r.status == "succeeded" for r in runs), [r.error for r in runs]
    assert ChangeOrder.objects.count() == len(simulator.company.pc_change_orders)
    assert not QuarantinedRecord.objects.exists()
    for method, target in simulator.requests_log:
        parts = urlsplit(target)
        # The simulator answers 400 without Procore-Company-Id; the log keeps no headers.
        assert_documented_request(
            method, parts.path, parse_qs(parts.query), {"Authorization": "", "Procore-Company-Id": ""}
        )


# ---- webhooks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["webhook_v2.json", "webhook_v3.json", "webhook_v4.json"])
def test_documented_webhook_examples_conform_and_are_read(name: str) -> None:
    event = example(VENDOR, name)
    assert_conforms(VENDOR, "webhook_event.schema.json", event)
    # RFIs and Direct Cost Line Items are not synced: read, and ignored.
    assert KINDS["procore"].webhook_hints(event, {}, {}) == []
    assert KINDS["procore"].webhook_event_id({}, json.dumps(event).encode(), event) == str(
        event.get("ulid") or event["id"]
    )


@pytest.mark.parametrize("version", ["v2.0", "v3.0", "v4.0"])
def test_each_payload_format_names_the_change_order_and_its_project(version: str) -> None:
    event = procore_event("change_order", 71001, "update", project_id=14406, payload_version=version)
    assert_conforms(VENDOR, "webhook_event.schema.json", event)

    [hint] = KINDS["procore"].webhook_hints(event, {"company_id": PROCORE_COMPANY_ID}, {})

    assert (hint.stream, hint.external_id, hint.op, hint.scope) == (
        "change_orders",
        "71001",
        "upsert",
        "14406",
    )
    assert hint.at is not None


def test_v4_reasons_beyond_create_update_delete_are_hints_to_fetch() -> None:
    event = {**example(VENDOR, "webhook_v4.json"), "resource_type": "Submittals", "reason": "restore"}
    [hint] = KINDS["procore"].webhook_hints(event, {}, {})
    assert (hint.stream, hint.op, hint.scope) == ("submittals", "upsert", "6778")
    deleted = {**event, "reason": "delete"}
    assert KINDS["procore"].webhook_hints(deleted, {}, {})[0].op == "delete"
    with pytest.raises(schemes.Malformed, match="reason"):
        KINDS["procore"].webhook_hints({k: v for k, v in event.items() if k != "reason"}, {}, {})
