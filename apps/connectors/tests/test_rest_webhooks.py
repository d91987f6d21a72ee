"""Standard Webhooks for the generic ``rest`` kind, end to end: deliveries signed as the simulator's generic
API signs them, posted to ``/webhooks/<slug>/``, stored in the inbox and processed against the simulator over
loopback (id-only events fetch the record through the stream's ``detail_path``; full events are mapped through
the stream's field mapping). Processing is called directly; nothing is queued to a broker."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import random
import time
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.test import Client as HttpClient

from apps.connectors.kinds import KINDS, ConfigurationError, get_kind
from apps.connectors.kinds.base import parse_datetime
from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.services import connection_import, sync_connection
from apps.connectors.webhooks import schemes, tasks
from apps.connectors.webhooks.processing import process_delivery
from apps.entities.models import ChangeOrder, Project
from apps.simulator import Company, SimulatorServer
from apps.simulator.common import procore_time
from apps.simulator.generic import render_project, rest_event
from apps.simulator.webhooks import (
    change_record,
    event_for,
    new_standard_secret,
    send,
    standard_delivery,
    standard_event_delivery,
    standard_signature,
)

from .test_rest import rest_options

SECRET = new_standard_secret(seed=11)
PREVIOUS = new_standard_secret(seed=12)
Status = WebhookDelivery.Status


def with_detail_paths(style: str = "cursor") -> dict[str, Any]:
    options = rest_options(style)
    for stream in options["streams"]:
        stream["detail_path"] = f"/generic/{style}/{stream['name']}/{{id}}"
    return options


@pytest.fixture
def inhouse(db: None, simulator: SimulatorServer, fast_http: None, rule_calls: list[Any]) -> Connection:
    """A rest connection to the simulator's generic API, synced once, with one webhook secret."""
    [connection] = connection_import(
        data=[
            {
                "slug": "inhouse",
                "kind": "rest",
                "base_url": simulator.base_url,
                "credentials": {"access_token": "sim-rest-token"},
                "webhook_secret": SECRET,
                "options": with_detail_paths(),
            }
        ],
        actor="system:test",
    )
    sync_connection(connection=connection)  # both streams, then linking (change orders to projects)
    rule_calls.clear()
    return connection


def post(client: HttpClient, headers: dict[str, str], body: bytes, slug: str = "inhouse") -> Any:
    headers = dict(headers)
    content_type = headers.pop("Content-Type", "application/json")
    return client.post(f"/webhooks/{slug}/", data=body, content_type=content_type, headers=headers)


def deliver(client: HttpClient, headers: dict[str, str], body: bytes) -> tuple[WebhookDelivery, Any]:
    response = post(client, headers, body)
    assert response.status_code == 202, response.content
    outcome = process_delivery(int(response.json()["id"]))
    assert outcome.status == "processed", outcome.error
    return WebhookDelivery.objects.get(pk=response.json()["id"]), outcome


def project(connection: Connection, record_id: int) -> Project:
    return Project.objects.get(source=connection, external_id=str(record_id))


def version(ms: int) -> dt.datetime:
    return parse_datetime(procore_time(ms))


# ---- the two event shapes --------------------------------------------------------------------------------


def test_an_id_only_event_fetches_the_record_through_detail_path(
    inhouse: Connection, company: Company, client: HttpClient, rule_calls: list[Any]
) -> None:
    target = sorted(company.pc_projects)[4]
    record = change_record(company, "rest", "project", target, name="Harbour Tower (renamed)")
    event = rest_event("project", record, "update", full=False)
    assert event == {"type": "projects.updated", "data": {"id": target}}

    delivery, outcome = deliver(client, *standard_event_delivery(SECRET, event))

    entity = project(inhouse, target)
    assert entity.name == "Harbour Tower (renamed)"
    assert entity.source_updated_at == version(record.updated)
    assert delivery.status == Status.PROCESSED and delivery.signature_valid and delivery.attempts == 1
    assert delivery.event_id == delivery.headers["webhook-id"]
    assert outcome.counts["changed"] == 1
    assert rule_calls == [({"project": {entity.pk}}, "webhook")]


def test_a_full_event_is_mapped_without_a_fetch(
    inhouse: Connection, company: Company, simulator: SimulatorServer, client: HttpClient
) -> None:
    target = sorted(company.pc_change_orders)[2]
    old = company.pc_change_orders[target]
    record = change_record(
        company, "rest", "change_order", target, title="Extra rebar", grand_total=old.grand_total + 50_000
    )
    # Every read of the generic API fails: a full event must not need one.
    simulator.faults.add("status", path_prefix="/generic/", status=503, count=None)

    deliver(client, *standard_event_delivery(SECRET, event_for("rest", "change_order", record)))

    entity = ChangeOrder.objects.get(source=inhouse, external_id=str(target))
    assert entity.title == "Extra rebar"
    assert entity.amount == Decimal(record.grand_total) / 100
    assert entity.source_updated_at == version(record.updated)


def test_a_created_record_arrives_by_webhook(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    target = max(company.pc_projects) + 1
    with company.lock:
        template = company.pc_projects[min(company.pc_projects)]
        company.pc_projects[target] = dataclasses.replace(template, id=target, project_number="P-NEW-1")
    record = change_record(company, "rest", "project", target, name="Brand New Depot")
    assert not Project.objects.filter(source=inhouse, external_id=str(target)).exists()

    deliver(client, *standard_event_delivery(SECRET, rest_event("project", record, "create", full=False)))

    entity = project(inhouse, target)
    assert (entity.number, entity.name, entity.deleted_at) == ("P-NEW-1", "Brand New Depot", None)


# ---- at least once, out of order -------------------------------------------------------------------------


def test_a_duplicate_delivery_changes_nothing(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    target = sorted(company.pc_projects)[1]
    record = change_record(company, "rest", "project", target, name="Once Only")
    headers, body = standard_event_delivery(SECRET, rest_event("project", record, full=False))
    first, _ = deliver(client, headers, body)
    held = project(inhouse, target)

    again = post(client, headers, body)
    # The same change sent again under a new id (a sender that re-sends rather than retries).
    _, resent = deliver(client, *standard_event_delivery(SECRET, rest_event("project", record)))

    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert WebhookDelivery.objects.filter(event_id=headers["webhook-id"]).count() == 1
    assert process_delivery(first.pk).status == "skipped"  # a redelivered task message: already processed
    assert resent.counts["changed"] == 0
    now = project(inhouse, target)
    assert (now.synced_at, now.content_hash, now.name) == (held.synced_at, held.content_hash, "Once Only")


def test_an_older_version_never_overwrites_a_newer_one(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    target = sorted(company.pc_projects)[2]
    before = copy.copy(company.pc_projects[target])
    change_record(company, "rest", "project", target, name="Older Name")
    older = copy.copy(company.pc_projects[target])
    newer = change_record(company, "rest", "project", target, name="Newer Name")
    assert before.updated < older.updated < newer.updated

    deliver(client, *standard_event_delivery(SECRET, rest_event("project", newer)))
    _, late = deliver(client, *standard_event_delivery(SECRET, rest_event("project", older)))
    deliver(client, *standard_event_delivery(SECRET, rest_event("project", before)))

    entity = project(inhouse, target)
    assert entity.name == "Newer Name" and entity.source_updated_at == version(newer.updated)
    assert late.counts["changed"] == 0


def test_a_shuffled_burst_with_duplicates_ends_at_the_newest_versions(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    """Three versions of 20 projects, full and id-only events, 20% sent twice, in random order: the
    database ends exactly at upstream's newest versions, each delivery stored once."""
    rng = random.Random(3)
    targets = sorted(company.pc_projects)[10:30]
    deliveries = []
    for target in targets:
        for n in range(3):
            record = copy.copy(change_record(company, "rest", "project", target, name=f"{target} v{n}"))
            deliveries.append(
                standard_event_delivery(SECRET, rest_event("project", record, full=rng.random() < 0.7))
            )
    deliveries += rng.sample(deliveries, len(deliveries) // 5)
    rng.shuffle(deliveries)

    answers = [post(client, headers, body) for headers, body in deliveries]
    accepted = [a.json()["id"] for a in answers if a.status_code == 202]
    outcomes = [process_delivery(delivery_id) for delivery_id in accepted]

    assert [a.status_code for a in answers].count(200) == len(deliveries) - 60
    assert len(accepted) == WebhookDelivery.objects.count() == 60
    assert all(o.status == "processed" for o in outcomes)
    for target in targets:
        upstream = company.pc_projects[target]
        entity = project(inhouse, target)
        assert (entity.name, entity.source_updated_at) == (f"{target} v2", version(upstream.updated))
        assert upstream.name == f"{target} v2"


# ---- deletes ---------------------------------------------------------------------------------------------


def test_a_deleted_event_tombstones_and_a_late_update_cannot_resurrect(
    inhouse: Connection, company: Company, client: HttpClient, rule_calls: list[Any]
) -> None:
    target = sorted(company.pc_projects)[3]
    stale = copy.copy(company.pc_projects[target])
    company.delete("procore", "project", target)

    deliver(client, *standard_event_delivery(SECRET, rest_event("project", stale, "delete", full=False)))
    entity = project(inhouse, target)
    assert entity.deleted_at is not None
    assert rule_calls == [({"project": {entity.pk}}, "webhook")]

    # An update sent before the deletion but delivered after it.
    _, late = deliver(client, *standard_event_delivery(SECRET, rest_event("project", stale)))
    assert late.counts["changed"] == 0
    assert project(inhouse, target).deleted_at == entity.deleted_at


def test_a_deleted_event_carrying_the_record_is_versioned_by_it(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    target = sorted(company.pc_projects)[9]
    held = project(inhouse, target)
    record = change_record(company, "rest", "project", target, name="Last Words")
    company.delete("procore", "project", target)

    deliver(client, *standard_event_delivery(SECRET, rest_event("project", record, "delete")))

    entity = project(inhouse, target)
    assert entity.deleted_at is not None and held.deleted_at is None
    # The update event for the record's last version, sent before the deletion and delivered after it,
    # carries the same version as the deleted record: it must not bring it back.
    assert entity.source_updated_at >= version(record.updated)
    _, late = deliver(client, *standard_event_delivery(SECRET, rest_event("project", record)))
    assert late.counts["changed"] == 0 and project(inhouse, target).deleted_at is not None


def test_an_id_only_update_for_a_record_gone_upstream_tombstones_it(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    target = sorted(company.pc_change_orders)[7]
    record = company.pc_change_orders[target]
    company.delete("procore", "change_order", target)  # the detail endpoint now answers 404

    _, outcome = deliver(
        client, *standard_event_delivery(SECRET, rest_event("change_order", record, full=False))
    )

    assert ChangeOrder.objects.get(source=inhouse, external_id=str(target)).deleted_at is not None
    assert outcome.counts["tombstoned"] == 1


# ---- signatures and time ---------------------------------------------------------------------------------


def test_a_bad_signature_is_401_kept_and_never_processed(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    target = sorted(company.pc_projects)[5]
    held = project(inhouse, target)
    record = change_record(company, "rest", "project", target, name="Forged")
    headers, body = standard_event_delivery(new_standard_secret(seed=99), rest_event("project", record))

    response = post(client, headers, body)

    assert response.status_code == 401 and "signature" in response.json()["error"]
    row = WebhookDelivery.objects.get()
    assert row.status == Status.REJECTED and not row.signature_valid
    assert bytes(row.body) == body and row.event_id == headers["webhook-id"]
    assert row.headers["webhook-signature"] == schemes.REDACTED
    assert process_delivery(row.pk).status == "skipped"
    assert project(inhouse, target).name == held.name
    assert WebhookDelivery.objects.get().status == Status.REJECTED


def test_a_tampered_body_is_401(inhouse: Connection, company: Company, client: HttpClient) -> None:
    record = company.pc_projects[sorted(company.pc_projects)[0]]
    headers, body = standard_event_delivery(SECRET, rest_event("project", record))
    tampered = body.replace(b'"projects.updated"', b'"projects.deleted"')
    assert tampered != body

    assert post(client, headers, tampered).status_code == 401
    assert post(client, {**headers, "webhook-signature": ""}, body).status_code == 401


def test_a_rotated_previous_secret_is_accepted_until_removed(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    target = sorted(company.pc_projects)[6]
    inhouse.webhook_secrets = [SECRET, PREVIOUS]
    inhouse.save()
    record = change_record(company, "rest", "project", target, name="Signed With The Old Key")

    deliver(client, *standard_event_delivery(PREVIOUS, rest_event("project", record, full=False)))
    assert project(inhouse, target).name == "Signed With The Old Key"

    inhouse.webhook_secrets = [SECRET]
    inhouse.save()
    assert post(client, *standard_event_delivery(PREVIOUS, rest_event("project", record))).status_code == 401
    assert post(client, *standard_event_delivery(SECRET, rest_event("project", record))).status_code == 202


# 30 s either side of the 5-minute window: the stamp is taken before the request, and a loaded machine lags.
@pytest.mark.parametrize(("offset", "status"), [(-330, 401), (330, 401), (-270, 202), (270, 202)])
def test_timestamps_outside_five_minutes_are_401(
    inhouse: Connection, company: Company, client: HttpClient, offset: int, status: int
) -> None:
    record = company.pc_projects[sorted(company.pc_projects)[0]]
    stamp = int(time.time()) + offset
    headers, body = standard_event_delivery(SECRET, rest_event("project", record), timestamp=stamp)

    response = post(client, headers, body)

    assert response.status_code == status, response.content
    if status == 401:
        assert "timestamp" in response.json()["error"]
        assert WebhookDelivery.objects.get().status == Status.REJECTED


# ---- bodies ----------------------------------------------------------------------------------------------


def signed(body: bytes, secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "webhook-id": f"msg_{abs(hash(body))}",
        "webhook-timestamp": stamp,
        "webhook-signature": standard_signature(secret, f"msg_{abs(hash(body))}", stamp, body),
    }
    return headers, body


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"type": "projects", "data": {"id": 1}}',
        b'{"type": "projects.renamed", "data": {"id": 1}}',
        b'{"type": "projects.updated"}',
        b'{"type": "projects.updated", "data": {}}',
        b'{"type": "projects.updated", "data": [1]}',
        b'{"type": "projects.updated", "data": {"id": null}}',
        b'{"type": "projects.updated", "data": {"id": true}}',
        b'{"type": "projects.updated", "data": {"id": " "}}',
    ],
)
def test_a_malformed_body_is_400_and_not_stored(inhouse: Connection, client: HttpClient, body: bytes) -> None:
    response = post(client, *signed(body))

    assert response.status_code == 400
    assert response.json()["error"]
    assert not WebhookDelivery.objects.exists()


def test_a_body_over_one_mebibyte_is_413(inhouse: Connection, company: Company, client: HttpClient) -> None:
    record = company.pc_projects[sorted(company.pc_projects)[0]]
    event = rest_event("project", record)
    event["data"]["attributes"]["notes"] = "x" * schemes.MAX_BODY
    headers, body = standard_event_delivery(SECRET, event)
    assert len(body) > schemes.MAX_BODY

    response = post(client, headers, body)

    assert response.status_code == 413
    assert not WebhookDelivery.objects.exists()
    # Exactly at the limit is read, verified and judged on its shape instead.
    padded = json.dumps({"type": "projects.updated", "data": {"id": 1}, "pad": ""}).encode()
    padded = padded.replace(b'"pad": ""', b'"pad": "' + b"y" * (schemes.MAX_BODY - len(padded)) + b'"')
    assert len(padded) == schemes.MAX_BODY
    assert post(client, *signed(padded)).status_code == 202


# ---- configuration ---------------------------------------------------------------------------------------


def test_an_event_for_a_stream_not_synced_is_accepted_and_ignored(
    inhouse: Connection, client: HttpClient
) -> None:
    delivery, outcome = deliver(
        client, *standard_delivery(SECRET, "invoices.updated", {"id": "INV-1", "total": "10.00"})
    )

    assert delivery.status == Status.PROCESSED
    assert outcome.counts == {"hints": 0, "changed": 0, "tombstoned": 0, "quarantined": 0, "ignored": 1}
    assert delivery.summary["ignored_types"] == {"stream invoices": 1}  # counted in admin, by stream


def test_an_id_only_event_without_detail_path_fails_for_good(
    inhouse: Connection, company: Company, client: HttpClient
) -> None:
    options = with_detail_paths()
    del options["streams"][0]["detail_path"]
    inhouse.options = options
    inhouse.save()
    record = company.pc_projects[sorted(company.pc_projects)[0]]
    response = post(client, *standard_event_delivery(SECRET, rest_event("project", record, full=False)))

    outcome = process_delivery(int(response.json()["id"]))

    assert outcome.status == "failed" and not outcome.retry
    row = WebhookDelivery.objects.get()
    assert row.status == Status.FAILED and "detail_path" in row.error


@pytest.mark.parametrize(
    ("detail_path", "problem"),
    [
        ("/generic/cursor/projects", "must contain {id} once"),
        ("/generic/{id}/projects/{id}", "must contain {id} once"),
        ("/generic/{kind}/projects/{id}", "no braces other than {id}"),
        (7, "detail_path must be a string"),
    ],
)
def test_detail_path_is_validated(db: None, detail_path: Any, problem: str) -> None:
    options = with_detail_paths()
    options["streams"][0]["detail_path"] = detail_path
    connection = Connection(slug="bad", kind="rest", base_url="http://127.0.0.1:9/", options=options)

    with pytest.raises(ConfigurationError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        get_kind(connection).streams  # noqa: B018 - parsing the options is the point


def test_ids_cannot_steer_the_detail_read_elsewhere(inhouse: Connection, simulator: SimulatorServer) -> None:
    kind = get_kind(inhouse)
    stream = kind.stream("projects")
    client = kind.client()
    try:
        # Quoted as one path segment: ``../../x`` stays inside the detail path and finds nothing.
        assert kind.fetch_records(client, stream, ["../../cursor/projects", "..", "", "999999999"]) == []  # type: ignore[attr-defined]
    finally:
        client.close()


def test_processing_one_delivery_is_a_bounded_number_of_queries(
    inhouse: Connection, company: Company, client: HttpClient, django_assert_max_num_queries: Any
) -> None:
    target = sorted(company.pc_projects)[8]
    record = change_record(company, "rest", "project", target, name="Counted")
    response = post(client, *standard_event_delivery(SECRET, rest_event("project", record, full=False)))

    # Claim (2), the savepoints, one set-based upsert, the linking statements (one per link, whatever the
    # table sizes; the documents' six skipped after one EXISTS when there are none), the tombstone check is
    # skipped (nothing gone), the processed mark: 19, none per record.
    with django_assert_max_num_queries(19):
        outcome = process_delivery(int(response.json()["id"]))

    assert outcome.status == "processed" and project(inhouse, target).name == "Counted"


def test_standard_delivery_signs_what_the_receiver_verifies() -> None:
    """The simulator's signer and the receiver's verifier agree (and disagree on any other key)."""
    headers, body = standard_delivery(
        [PREVIOUS, SECRET], "projects.updated", {"id": 1}, timestamp=1_700_000_000
    )
    inbound = schemes.Inbound("POST", (), {k.lower(): v for k, v in headers.items()}, body, 1_700_000_000)
    KINDS["rest"].webhook_verify(inbound, [SECRET])
    KINDS["rest"].webhook_verify(inbound, [PREVIOUS])
    with pytest.raises(schemes.Rejected):
        KINDS["rest"].webhook_verify(inbound, [new_standard_secret(seed=13)])
    assert len(headers["webhook-signature"].split()) == 2


# ---- the simulator's side --------------------------------------------------------------------------------


def test_the_generic_api_serves_one_record_by_id(company: Company, simulator: SimulatorServer) -> None:
    target = sorted(company.pc_projects)[0]
    url = f"{simulator.base_url.rstrip('/')}/generic/link/projects/{target}"
    auth = {"Authorization": "Bearer sim-rest-token"}

    found = requests.get(url, headers=auth, timeout=5)
    assert found.status_code == 200
    assert found.json() == json.loads(json.dumps(render_project(company.pc_projects[target])))

    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url + "x", headers=auth, timeout=5).status_code == 404
    company.delete("procore", "project", target)
    assert requests.get(url, headers=auth, timeout=5).status_code == 404


# ---- over real HTTP --------------------------------------------------------------------------------------


def test_deliveries_over_http_are_stored_once_and_queued_after_commit(
    transactional_db: None,
    live_server: Any,
    company: Company,
    simulator: SimulatorServer,
    fast_http: None,
    rule_calls: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The receiver under a real server (raw bytes off the socket, its own commits); the simulator sends."""
    queued: list[int] = []
    monkeypatch.setattr(
        tasks.process_webhook_delivery, "apply_async", lambda args, **kw: queued.append(args[0])
    )
    [connection] = connection_import(
        data=[
            {
                "slug": "inhouse",
                "kind": "rest",
                "base_url": simulator.base_url,
                "credentials": {"access_token": "sim-rest-token"},
                "webhook_secret": [SECRET, PREVIOUS],
                "options": with_detail_paths(),
            }
        ],
        actor="system:test",
    )
    url = f"{live_server.url}/webhooks/inhouse/"
    target = sorted(company.pc_projects)[3]
    record = change_record(company, "rest", "project", target, name="Over The Wire")
    headers, body = standard_event_delivery(PREVIOUS, rest_event("project", record, full=False))

    status, answer = send(url, headers, body)
    again = send(url, headers, body)
    forged = send(url, *standard_event_delivery(new_standard_secret(seed=5), rest_event("project", record)))

    assert status == 202 and answer["status"] == "accepted"
    assert again == (200, {"status": "duplicate"})
    assert forged[0] == 401
    assert queued == [answer["id"]]  # once, after the insert committed; never for the duplicate or forgery
    assert process_delivery(answer["id"]).status == "processed"
    assert project(connection, target).name == "Over The Wire"
    assert WebhookDelivery.objects.filter(status=Status.REJECTED).count() == 1
