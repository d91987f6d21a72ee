"""HubSpot's published shapes (contracts/hubspot/, from HubSpot-public-api-spec-collection and HubSpot's docs)
hold the bundled simulator's answers, the connector's requests, and a recorded multi-page conversation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import requests

import apps.connectors.kinds.hubspot.streams as hubspot_streams
from apps.connectors.http import CallStats, HttpClient
from apps.connectors.kinds import KINDS
from apps.connectors.kinds.base import PagingStalled
from apps.connectors.kinds.hubspot import HubSpot
from apps.connectors.kinds.hubspot.streams import Companies, Owners
from apps.connectors.models import Connection
from apps.simulator import SimulatorServer
from apps.simulator.webhooks import hubspot_event, hubspot_mixed_batch

from . import assert_conforms, example, load

VENDOR = "hubspot"
TOKEN = {"Authorization": "Bearer sim-hubspot-token"}


# ---- the documented examples hold their own schemas (the files agree with each other) --------------------


def test_documented_examples_conform_to_their_schemas() -> None:
    assert_conforms(VENDOR, "object.schema.json", example(VENDOR, "object_example.json"))
    assert_conforms(VENDOR, "error.schema.json", example(VENDOR, "error_example.json"))
    owners = {"results": [example(VENDOR, "owner_example.json") | {"type": "PERSON"}]}
    assert_conforms(VENDOR, "owners_response.schema.json", owners)
    page = {"total": 1, "results": [example(VENDOR, "object_example.json")]}
    page["paging"] = {"next": example(VENDOR, "next_page_example.json")}
    assert_conforms(VENDOR, "search_response.schema.json", page)
    assert_conforms(
        VENDOR, "webhook_events.schema.json", example(VENDOR, "webhook_batch_example.json")["events"]
    )


def test_a_schema_violation_is_reported_with_its_path() -> None:
    bad = {"total": "many", "results": [{"id": 5}]}
    with pytest.raises(
        AssertionError, match=r"search_response.schema.json: results/0: 'archived' is a required"
    ):
        assert_conforms(VENDOR, "search_response.schema.json", bad)


def test_the_documented_webhook_example_is_read_and_its_contact_event_counted_as_ignored() -> None:
    events = example(VENDOR, "webhook_batch_example.json")["events"]
    parsed = KINDS["hubspot"].webhook_events(events, {}, {})
    assert parsed.hints == [] and parsed.ignored == {"contact.creation": 1}


# ---- the simulator's answers ----------------------------------------------------------------------------


@pytest.fixture
def sim(simulator: SimulatorServer) -> Any:
    session = requests.Session()
    session.headers.update(TOKEN)

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        return session.request(method, simulator.base_url + path, timeout=10, **kwargs)

    yield call
    session.close()


def test_simulator_search_answers_conform(sim: Any, simulator: SimulatorServer) -> None:
    simulator.state.hubspot_shuffle_ties = True
    body = {
        "filterGroups": [
            {"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}
        ],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["name", "domain", "contract_renewal_date"],
        "limit": 7,
        "after": "0",
    }
    assert_conforms(VENDOR, "search_request.schema.json", body)
    first = sim("POST", "/crm/v3/objects/companies/search", json=body)
    assert first.status_code == 200
    assert_conforms(VENDOR, "search_response.schema.json", first.json())
    assert first.json()["paging"]["next"]["after"]
    later = sim(
        "POST",
        "/crm/v3/objects/companies/search",
        json={**body, "after": first.json()["paging"]["next"]["after"]},
    )
    assert_conforms(VENDOR, "search_response.schema.json", later.json())
    company_id = first.json()["results"][0]["id"]
    one = sim("GET", f"/crm/v3/objects/companies/{company_id}", params={"properties": "name,domain"})
    assert_conforms(VENDOR, "object.schema.json", one.json())


def test_simulator_owners_notes_and_errors_conform(sim: Any, simulator: SimulatorServer) -> None:
    owners = sim("GET", "/crm/v3/owners", params={"limit": 5, "archived": "false"})
    assert_conforms(VENDOR, "owners_response.schema.json", owners.json())
    company_id = next(iter(simulator.company.hs_companies))
    note = {
        "properties": {"hs_note_body": "Contract check", "hs_timestamp": "2026-11-23T12:00:00Z"},
        "associations": [
            {
                "to": {"id": company_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 190}],
            }
        ],
    }
    assert_conforms(VENDOR, "note_create_request.schema.json", note)
    created = sim("POST", "/crm/v3/objects/notes", json=note)
    assert created.status_code == 201
    assert_conforms(VENDOR, "object.schema.json", created.json())
    found = sim(
        "POST",
        "/crm/v3/objects/notes/search",
        json={
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "hs_note_body", "operator": "CONTAINS_TOKEN", "value": "check"}
                    ]
                }
            ],
            "sorts": [],
            "properties": ["hs_note_body"],
            "limit": 1,
            "after": "0",
        },
    )
    assert_conforms(VENDOR, "search_response.schema.json", found.json())
    for response in (
        sim("GET", "/crm/v3/objects/companies/1"),
        sim("POST", "/crm/v3/objects/companies/search", json={"limit": 201}),
        requests.get(simulator.base_url + "/crm/v3/owners", timeout=10),
    ):
        assert response.status_code in (400, 401, 404)
        assert_conforms(VENDOR, "error.schema.json", response.json())


def test_simulator_webhook_batches_conform_and_use_documented_subscription_types() -> None:
    batch = [*hubspot_mixed_batch(5, 6), hubspot_event(7, "company.deletion")]
    assert_conforms(VENDOR, "webhook_events.schema.json", batch)
    documented = set(load(VENDOR, "subscription_types.json")["eventType"])
    assert {event["subscriptionType"] for event in batch} <= documented


# ---- the connector's requests ---------------------------------------------------------------------------


class Recording(HttpClient):
    """The real client, keeping every JSON body and query it sends."""

    sent: list[tuple[str, str, Any]]

    def post_json(self, path: str, body: Any, headers: Any = None) -> Any:
        self.sent.append(("POST", path, copy.deepcopy(body)))
        return super().post_json(path, body, headers=headers)

    def get_json(self, path: str, params: Any = None) -> Any:
        self.sent.append(("GET", path, dict(params or {})))
        return super().get_json(path, params=params)


def _kind(connections: dict[str, Connection]) -> HubSpot:
    crm = connections["crm"]
    crm.options = {**crm.options, "search_rate_budget": False, "rate_budget": False}
    return HubSpot(crm)


def _recording(kind: HubSpot) -> Recording:
    client = Recording(kind.connection.base_url, headers=kind.auth_headers())
    client.sent = []
    return client


def test_the_connectors_requests_conform(
    connections: dict[str, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubspot_streams, "SEARCH_PAGE", 9)
    kind = _kind(connections)
    client = _recording(kind)
    list(Owners(kind).pages(client, {}, True))
    list(Companies(kind).pages(client, {}, True))
    kind.fetch_records(client, kind.stream("companies"), [str(r) for r in (1, 2)])  # by id: 404s included

    searches = [body for method, path, body in client.sent if path.endswith("/search")]
    assert len(searches) > 1
    for body in searches:
        assert_conforms(VENDOR, "search_request.schema.json", body)
    owners = [params for method, path, params in client.sent if path == "/crm/v3/owners"]
    documented = {"after", "archived", "email", "limit"}  # crmOwners.json GET /crm/v3/owners parameters
    assert owners and all(set(params) <= documented for params in owners)
    reads = [params for method, path, params in client.sent if path.startswith("/crm/v3/objects/companies/")]
    reads = [params for params in reads if isinstance(params, dict) and "filterGroups" not in params]
    # companies.json GET /crm/v3/objects/companies/{companyId} parameters
    assert reads and all(
        set(params) <= {"archived", "associations", "idProperty", "properties"} for params in reads
    )


def test_the_connectors_note_requests_conform(
    connections: dict[str, Connection], simulator: SimulatorServer
) -> None:
    kind = _kind(connections)
    client = _recording(kind)
    kind.client = lambda: client  # type: ignore[method-assign]
    target = next(iter(simulator.company.hs_companies))
    kind.write_note(target, "Margin below 12%", "esc-contract-1")
    kind.write_note(target, "Margin below 12%", "esc-contract-1", retry=True)
    creates = [body for method, path, body in client.sent if path == "/crm/v3/objects/notes"]
    searches = [body for method, path, body in client.sent if path == "/crm/v3/objects/notes/search"]
    assert len(creates) == 1 and len(searches) == 1
    assert_conforms(VENDOR, "note_create_request.schema.json", creates[0])
    for spec in creates[0]["associations"][0]["types"]:
        assert_conforms(VENDOR, "association_spec.schema.json", spec)
    assert_conforms(VENDOR, "search_request.schema.json", searches[0])


# ---- a recorded multi-page conversation, replayed through the connector ---------------------------------


def _masked(body: dict[str, Any]) -> dict[str, Any]:
    """The request without the run's own start time (the window's LT bound)."""
    body = copy.deepcopy(body)
    for group in body.get("filterGroups") or []:
        for flt in group.get("filters") or []:
            if flt.get("propertyName") == "hs_lastmodifieddate" and flt.get("operator") == "LT":
                flt["value"] = "<run start>"
    return body


class Replay:
    """Answers the connector from a recorded conversation, checking each request is the one recorded."""

    def __init__(self, turns: list[dict[str, Any]]) -> None:
        self.turns = list(turns)
        self.stats = CallStats()

    def post_json(self, path: str, body: Any, headers: Any = None) -> Any:
        assert self.turns, f"an unrecorded request: POST {path} {json.dumps(body)}"
        turn = self.turns.pop(0)
        assert (path, _masked(body)) == (turn["request"]["path"], _masked(turn["request"]["body"]))
        return copy.deepcopy(turn["response"]["body"])


def _conversation() -> dict[str, Any]:
    return load(VENDOR, "conversation_companies.json")


def test_the_recorded_conversation_conforms_to_the_schemas() -> None:
    conversation = _conversation()
    assert len(conversation["turns"]) >= 3
    for turn in conversation["turns"]:
        assert_conforms(VENDOR, "search_request.schema.json", turn["request"]["body"])
        assert_conforms(VENDOR, "search_response.schema.json", turn["response"]["body"])


def _replay_kind() -> HubSpot:
    options = {"settle_seconds": 0, "search_rate_budget": False, "rate_budget": False}
    return HubSpot(Connection(slug="crm", kind="hubspot", options=options))


def test_the_conversation_replayed_through_the_connector_reads_every_company(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conversation = _conversation()
    monkeypatch.setattr(hubspot_streams, "SEARCH_PAGE", conversation["page_size"])
    replay = Replay(conversation["turns"])
    pages = list(Companies(_replay_kind()).pages(replay, {}, True))  # type: ignore[arg-type]
    assert replay.turns == []  # every recorded answer used, none asked for twice
    assert {r["id"] for p in pages for r in p.records} == set(conversation["ids"])
    assert (
        pages[-1].cursor["id"]
        == max(
            (r for p in pages for r in p.records),
            key=lambda r: (r["properties"]["hs_lastmodifieddate"], int(r["id"])),
        )["id"]
    )


def test_a_conversation_that_stops_early_while_saying_more_ends_as_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conversation = _conversation()
    monkeypatch.setattr(hubspot_streams, "SEARCH_PAGE", conversation["page_size"])
    turns = copy.deepcopy(conversation["turns"])
    last = turns[-1]["response"]["body"]
    last["results"], last["paging"] = [], {"next": {"after": "3"}}  # "more", and nothing
    with pytest.raises(PagingStalled):
        list(Companies(_replay_kind()).pages(Replay(turns), {}, True))  # type: ignore[arg-type]
