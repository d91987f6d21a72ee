"""HubSpot webhooks as HubSpot sends them: v3 signatures over the decoded URI, mixed batches applied event by
event, merges as merges, and deliveries deduplicated by their events' content."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from django.test import Client as HttpClient

from apps.connectors.kinds import KINDS
from apps.connectors.kinds.hubspot import webhooks as hubspot_webhooks
from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.services import sync_stream
from apps.connectors.webhooks import schemes
from apps.entities.models import Client
from apps.simulator import Company
from apps.simulator.webhooks import (
    change_record,
    hubspot_association_change,
    hubspot_delivery,
    hubspot_event,
    hubspot_merge,
    hubspot_mixed_batch,
    hubspot_object_event,
)

from .test_webhooks import HS_SECRET, HS_URL, accept, deliver_and_process, hooks, post  # noqa: F401

# ---- the v3 signature ----------------------------------------------------------------------------------

# The official Python client's v3 test vector: HubSpot/hubspot-api-python, tests/spec/utils/test_signature.py
# (``TEST_DATA`` and ``test_get_signature__v3``). Values written here, no code taken.
VECTOR = {
    "client_secret": "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
    "request_body": b"{'example_field':'example_value'}",
    "url": "https://www.example.com/webhook_uri",
    "http_method": "POST",
    "timestamp": "15000000",  # epoch milliseconds: 15,000 s after the epoch
    "signature": "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
}


def vector_inbound(*, now: float, signature: str = VECTOR["signature"], uri: str = VECTOR["url"]) -> Any:
    return schemes.Inbound(
        method="POST",
        uris=(uri,),
        headers={"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": VECTOR["timestamp"]},
        body=VECTOR["request_body"],  # type: ignore[arg-type]
        now=now,
    )


def test_the_official_clients_v3_vector_verifies() -> None:
    signed = hubspot_webhooks.hubspot_v3_signature(
        VECTOR["client_secret"],  # type: ignore[arg-type]
        VECTOR["http_method"],  # type: ignore[arg-type]
        VECTOR["url"],  # type: ignore[arg-type]
        VECTOR["request_body"],  # type: ignore[arg-type]
        VECTOR["timestamp"],  # type: ignore[arg-type]
    )
    assert signed.decode() == VECTOR["signature"]
    KINDS["hubspot"].webhook_verify(vector_inbound(now=15_000 + 299), [VECTOR["client_secret"]])  # type: ignore[list-item]


def test_the_vector_is_refused_past_five_minutes_with_another_secret_or_another_uri() -> None:
    secret = [VECTOR["client_secret"]]
    with pytest.raises(schemes.Rejected, match="5 minute"):
        KINDS["hubspot"].webhook_verify(vector_inbound(now=15_000 + 301), secret)  # type: ignore[arg-type]
    with pytest.raises(schemes.Rejected, match="does not match"):
        KINDS["hubspot"].webhook_verify(vector_inbound(now=15_001), ["zzzz"])
    with pytest.raises(schemes.Rejected, match="does not match"):
        KINDS["hubspot"].webhook_verify(
            vector_inbound(now=15_001, uri="https://www.example.com/webhook_uri2"),
            secret,  # type: ignore[arg-type]
        )


def _sign(secret: str, method: str, uri: str, body: bytes, stamp: str) -> str:
    message = method.encode() + uri.encode() + body + stamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def test_the_signature_covers_the_decoded_uri_not_the_raw_query_string() -> None:
    """HubSpot decodes the URI's percent-encoded characters (":", "/", "?", "@", "!", ...) before signing."""
    raw = "https://hooks.example.com/webhooks/crm/?portal=62515&next=https%3A%2F%2Fapp%2Fx%40y%21"
    decoded = "https://hooks.example.com/webhooks/crm/?portal=62515&next=https://app/x@y!"
    body, stamp = b"[]", "1700000000000"

    def inbound(signature: str) -> Any:
        headers = {"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": stamp}
        return schemes.Inbound("POST", (raw,), headers, body, now=1_700_000_000)

    KINDS["hubspot"].webhook_verify(inbound(_sign("s", "POST", decoded, body, stamp)), ["s"])
    with pytest.raises(schemes.Rejected):
        KINDS["hubspot"].webhook_verify(inbound(_sign("s", "POST", raw, body, stamp)), ["s"])


def test_a_request_signed_over_a_decoded_query_is_accepted_by_the_receiver(
    hooks: dict[str, Connection],  # noqa: F811
    client: HttpClient,
) -> None:
    url = "http://testserver/webhooks/crm/?source=hubspot%3Aportal%2F62515"
    headers, body = hubspot_delivery(url, HS_SECRET, [hubspot_event(1)])
    headers = {k: v for k, v in headers.items() if k != "Content-Type"}
    response = client.post(
        "/webhooks/crm/?source=hubspot%3Aportal%2F62515",
        data=body,
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == 202, response.content


# ---- mixed batches ---------------------------------------------------------------------------------------


@pytest.fixture
def crm(hooks: dict[str, Connection], company: Company) -> Connection:  # noqa: F811
    """The HubSpot connection with the simulator's owners and companies synced."""
    connection = hooks["crm"]
    sync_stream(connection=connection, stream="owners")
    run = sync_stream(connection=connection, stream="companies", full=True)
    assert run.status == "succeeded", run.error
    return connection


def _company_ids(company: Company) -> list[str]:
    return sorted(company.hs_companies, key=int)


def test_a_mixed_batch_is_applied_event_by_event_and_the_rest_counted_as_ignored(
    crm: Connection,
    company: Company,
    client: HttpClient,
) -> None:
    survivor_id, merged_id = _company_ids(company)[:2]
    change_record(company, "hubspot", "company", survivor_id, name="Survivor Holdings")
    company.delete("hubspot", "company", merged_id)  # merged away upstream: gone
    duplicate = Client.objects.get(source=crm, external_id=merged_id)

    delivery = deliver_and_process(
        client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, hubspot_mixed_batch(survivor_id, merged_id))
    )

    survivor = Client.objects.get(source=crm, external_id=survivor_id)
    assert survivor.name == "Survivor Holdings" and survivor.deleted_at is None
    duplicate.refresh_from_db()
    assert duplicate.merged_into_id == survivor.pk and duplicate.deleted_at is not None
    assert delivery.summary["merged"] == 1
    assert delivery.summary["ignored_types"] == {
        "contact.creation": 1,
        "company.associationChange": 1,
        "object.creation (0-1)": 1,
    }
    assert delivery.summary["ignored"] == 3 and delivery.summary["hints"] == 3


def test_object_events_for_companies_apply_and_a_deletion_tombstones(
    crm: Connection,
    company: Company,
    client: HttpClient,
) -> None:
    renamed, deleted = _company_ids(company)[2:4]
    change_record(company, "hubspot", "company", renamed, name="Renamed By Object Event")
    company.delete("hubspot", "company", deleted)
    events = [
        hubspot_object_event("company", renamed, "propertyChange"),
        hubspot_object_event("company", deleted, "deletion"),
    ]

    deliver_and_process(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, events))

    assert Client.objects.get(source=crm, external_id=renamed).name == "Renamed By Object Event"
    assert Client.objects.get(source=crm, external_id=deleted).deleted_at is not None


def test_an_unreadable_event_is_counted_and_never_blocks_its_batch(
    crm: Connection,
    company: Company,
    client: HttpClient,
) -> None:
    target = _company_ids(company)[4]
    change_record(company, "hubspot", "company", target, name="Still Applied")
    events: list[Any] = [
        "not an event",
        {"subscriptionType": "company.propertyChange"},  # no objectId
        hubspot_event(target, "company.propertyChange"),
    ]

    delivery = deliver_and_process(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, events))

    assert Client.objects.get(source=crm, external_id=target).name == "Still Applied"
    assert delivery.summary["ignored"] == 2
    assert set(delivery.summary["ignored_types"]) == {
        "unreadable: an event is not an object",
        "unreadable: objectId must be an id, got None",
    }


def test_a_merge_into_a_company_we_do_not_hold_tombstones_the_merged_one(
    crm: Connection,
    company: Company,
    client: HttpClient,
) -> None:
    merged = _company_ids(company)[5]
    company.delete("hubspot", "company", merged)
    event = hubspot_merge(999_999, [merged])  # the survivor is not found upstream either

    deliver_and_process(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, [event]))

    gone = Client.objects.get(source=crm, external_id=merged)
    assert gone.deleted_at is not None and gone.merged_into_id is None


def test_merge_and_association_hints_read_from_the_documented_fields() -> None:
    found = KINDS["hubspot"].webhook_events(
        [
            hubspot_merge(10, [11, 12], new_id=13),
            hubspot_association_change(10, 20, association_type="COMPANY_TO_COMPANY"),
            hubspot_object_event("deal", 5, "merge"),
        ],
        {},
        {},
    )
    [merge] = found.hints
    assert (merge.op, merge.external_id, set(merge.merged)) == ("merge", "13", {"10", "11", "12"})
    assert found.ignored == {"company.associationChange": 1, "object.merge (0-3)": 1}


# ---- deduplication ---------------------------------------------------------------------------------------


def test_a_redelivered_batch_is_a_duplicate_whatever_its_attempt_number_and_order(
    hooks: dict[str, Connection],  # noqa: F811
    client: HttpClient,
) -> None:
    events = [hubspot_event(1, event_id=7), hubspot_event(2, event_id=8)]
    accept(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, events))
    retried = [{**e, "attemptNumber": 1} for e in reversed(events)]

    again = post(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, retried))

    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert WebhookDelivery.objects.count() == 1


def test_a_new_batch_sharing_events_with_an_earlier_one_is_not_dropped(
    hooks: dict[str, Connection],  # noqa: F811
    client: HttpClient,
) -> None:
    shared = hubspot_event(1, event_id=7)
    accept(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, [shared, hubspot_event(2, event_id=8)]))
    accept(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, [shared, hubspot_event(3, event_id=9)]))
    # eventId is not unique: another event with the same eventId is a different event.
    accept(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, [hubspot_event(4, event_id=7)]))
    assert WebhookDelivery.objects.count() == 3


def test_event_keys_ignore_only_the_attempt_number() -> None:
    event = hubspot_event(1, event_id=7, occurred_at=1_700_000_000_000)
    key = hubspot_webhooks.event_key(event)
    assert hubspot_webhooks.event_key({**event, "attemptNumber": 4}) == key
    assert hubspot_webhooks.event_key({**event, "objectId": 2}) != key
    assert hubspot_webhooks.event_key({**event, "occurredAt": 1_700_000_000_001}) != key
    body = json.dumps([event]).encode()
    assert KINDS["hubspot"].webhook_event_id({}, body, [event]) == KINDS["hubspot"].webhook_event_id(
        {}, b"other bytes", [{**event, "attemptNumber": 2}]
    )


def test_webhook_delivery_admin_shows_what_each_delivery_ignored(
    hooks: dict[str, Connection],  # noqa: F811
    company: Company,
    client: HttpClient,
    admin_client: HttpClient,
) -> None:
    delivery = deliver_and_process(
        client,
        "crm",
        *hubspot_delivery(HS_URL, HS_SECRET, [hubspot_event(901, "contact.creation")]),
    )
    page = admin_client.get("/admin/connectors/webhookdelivery/")
    assert page.status_code == 200
    assert "contact.creation: 1" in page.content.decode()
    detail = admin_client.get(f"/admin/connectors/webhookdelivery/{delivery.pk}/change/")
    assert detail.status_code == 200 and "contact.creation" in detail.content.decode()
