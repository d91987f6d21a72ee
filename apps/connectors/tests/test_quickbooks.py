"""QuickBooks Online: both webhook formats, per-event inbox rows, merges, ignored events, the job mapping and
idempotent notes; against the simulator over loopback, deliveries through Django's test client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from django.test import Client as HttpClient

from apps.connectors.kinds import KINDS, get_kind
from apps.connectors.kinds.quickbooks import REQUEST_ID_MAX, request_id
from apps.connectors.models import Connection, QuarantinedRecord, WebhookDelivery
from apps.connectors.services import sync_stream
from apps.connectors.webhooks import schemes
from apps.connectors.webhooks.processing import process_delivery
from apps.entities.models import FinancialLine, SourceObject
from apps.simulator import Company, SimulatorServer
from apps.simulator.quickbooks import merge_customers
from apps.simulator.webhooks import (
    change_record,
    qbo_cloud_delivery,
    qbo_cloud_event,
    qbo_delivery,
    qbo_entity,
)

VERIFIER = "qbo-verifier-token"
Status = WebhookDelivery.Status


@pytest.fixture
def accounting(connections: dict[str, Connection], rule_calls: list[Any]) -> Connection:
    connection = connections["accounting"]
    connection.webhook_secrets = [VERIFIER]
    connection.save()
    return connection


def post(client: HttpClient, headers: dict[str, str], body: bytes) -> Any:
    headers = dict(headers)
    content_type = headers.pop("Content-Type", "application/json")
    return client.post("/webhooks/accounting/", data=body, content_type=content_type, headers=headers)


def process_all(ids: list[int]) -> list[WebhookDelivery]:
    for pk in ids:
        outcome = process_delivery(pk)
        assert outcome.status == "processed", outcome.error
    return list(WebhookDelivery.objects.filter(pk__in=ids).order_by("pk"))


# ---- signature -------------------------------------------------------------------------------------------


def test_intuits_own_signature_vector_verifies_and_a_changed_byte_does_not() -> None:
    """The payload, verifier token and signature of Intuit's .NET SDK test (WebhooksServiceTest
    ExecuteverifyToken, github.com/intuit/QuickBooks-V3-DotNET-SDK)."""
    body = (
        b'{"eventNotifications":[{"realmId":"1269959970","dataChangeEvent":{"entities":[{"name":"Vendor",'
        b'"id":"40","operation":"Update","lastUpdated":"2016-10-05T03:09:04.000Z"},{"name":"Customer",'
        b'"id":"43","operation":"Create","lastUpdated":"2016-10-05T03:07:04.000Z"}]}}]}'
    )
    token = "00faeec4-08d0-4996-bb37-698ae19f0149"
    signed = {"intuit-signature": "6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM="}
    KINDS["quickbooks"].webhook_verify(schemes.Inbound("POST", (), signed, body, 0), ["old-token", token])
    with pytest.raises(schemes.Rejected):
        KINDS["quickbooks"].webhook_verify(schemes.Inbound("POST", (), signed, body + b" ", 0), [token])
    expected = base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()
    assert expected == signed["intuit-signature"]


# ---- CloudEvents -----------------------------------------------------------------------------------------


def test_a_cloudevents_delivery_fetches_the_invoice_and_applies_it(
    accounting: Connection, company: Company, client: HttpClient
) -> None:
    sync_stream(connection=accounting, stream="invoices")
    target = next(i for i, inv in sorted(company.qbo_invoices.items()) if inv.balance > 0)
    record = change_record(company, "quickbooks", "invoice", target, balance=0)
    event = qbo_cloud_event("invoice", target, "Update", time_ms=record.updated)

    response = post(client, *qbo_cloud_delivery(VERIFIER, [event]))

    assert response.status_code == 202, response.content
    (delivery,) = process_all(response.json()["ids"])
    assert delivery.event_id == f"ce:{event['id']}" and delivery.summary["ignored_types"] == {}
    line = FinancialLine.objects.get(source=accounting, external_id=target)
    assert str(line.balance) == "0.00"


def test_a_batch_is_stored_once_per_event_and_a_redelivered_event_changes_nothing(
    accounting: Connection, company: Company, client: HttpClient
) -> None:
    ids = sorted(company.qbo_invoices, key=int)[:3]
    first, second, third = (qbo_cloud_event("invoice", i, "Update") for i in ids)

    batch = post(client, *qbo_cloud_delivery(VERIFIER, [first, second]))
    overlapping = post(client, *qbo_cloud_delivery(VERIFIER, [second, third]))
    again = post(client, *qbo_cloud_delivery(VERIFIER, [first, second]))

    assert batch.status_code == 202 and len(batch.json()["ids"]) == 2
    assert overlapping.status_code == 202 and len(overlapping.json()["ids"]) == 1
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    rows = WebhookDelivery.objects.order_by("pk")
    assert [r.event_id for r in rows] == [f"ce:{e['id']}" for e in (first, second, third)]
    # Each row holds its own event, still a CloudEvents array, so a worker processes exactly that one.
    assert [json.loads(bytes(r.body))[0]["id"] for r in rows] == [e["id"] for e in (first, second, third)]
    process_all([r.pk for r in rows])
    assert FinancialLine.objects.filter(source=accounting, external_id__in=ids).count() == 3


def test_legacy_batches_are_split_per_entity_and_deduplicated_by_content(
    accounting: Connection, company: Company, client: HttpClient
) -> None:
    ids = sorted(company.qbo_invoices, key=int)[:2]
    entities = [qbo_entity("invoice", i, last_updated=1_700_000_000_000) for i in ids]

    batch = post(client, *qbo_delivery(VERIFIER, entities))
    again = post(client, *qbo_delivery(VERIFIER, entities[1:]))

    assert batch.status_code == 202 and len(batch.json()["ids"]) == 2
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


def test_unknown_entities_operations_and_realms_are_recorded_as_ignored_never_refused(
    accounting: Connection, company: Company, client: HttpClient
) -> None:
    invoice = sorted(company.qbo_invoices, key=int)[0]
    events = [
        qbo_cloud_event("Payment", 7, "Create"),
        qbo_cloud_event("invoice", invoice, "Archived"),
        qbo_cloud_event("invoice", invoice, "Update", realm_id="999"),
        {**qbo_cloud_event("invoice", invoice), "type": "com.intuit.something.else"},
    ]

    response = post(client, *qbo_cloud_delivery(VERIFIER, events))

    assert response.status_code == 202
    rows = process_all(response.json()["ids"])
    assert [r.summary["ignored_types"] for r in rows] == [
        {"entity payment": 1},  # as Intuit spells it in the type
        {"operation archived": 1},
        {"realm 999": 1},
        {"type com.intuit.something.else": 1},
    ]
    assert all(r.status == Status.PROCESSED for r in rows)
    assert not FinancialLine.objects.filter(source=accounting).exists()  # nothing was fetched


def test_a_cloudevents_delete_tombstones_the_record(
    accounting: Connection, company: Company, client: HttpClient
) -> None:
    sync_stream(connection=accounting, stream="invoices")
    invoice = sorted(company.qbo_invoices, key=int)[5]
    company.delete("quickbooks", "invoice", invoice)
    stamp = company.qbo_deleted["Invoice"][invoice]

    response = post(
        client, *qbo_cloud_delivery(VERIFIER, [qbo_cloud_event("invoice", invoice, "Delete", stamp)])
    )

    process_all(response.json()["ids"])
    assert FinancialLine.objects.get(source=accounting, external_id=invoice).deleted_at is not None


@pytest.mark.parametrize("cloud", [False, True])
def test_a_customer_merge_tombstones_the_merged_away_customer_and_points_it_to_the_survivor(
    accounting: Connection, company: Company, client: HttpClient, cloud: bool
) -> None:
    sync_stream(connection=accounting, stream="customers")
    parents = sorted((c for c in company.qbo_customers.values() if not c.is_job), key=lambda c: int(c.id))
    survivor, merged = parents[0].id, parents[1].id
    stamp = merge_customers(company, survivor, merged)
    if cloud:
        # CloudEvents do not document where a merge names the merged-away record; the legacy field's
        # name is read from the event's data when it is there.
        event = qbo_cloud_event("customer", survivor, "Merge", stamp, data={"deletedId": merged})
        headers, body = qbo_cloud_delivery(VERIFIER, [event])
    else:
        headers, body = qbo_delivery(
            VERIFIER, [qbo_entity("customer", survivor, "Merge", last_updated=stamp, deleted_id=merged)]
        )

    process_all(post(client, headers, body).json()["ids"])

    gone = SourceObject.objects.get(connection=accounting, external_id=merged)
    assert gone.deleted_at is not None and gone.merged_into_ref == survivor
    alive = SourceObject.objects.get(connection=accounting, external_id=survivor)
    assert alive.deleted_at is None and alive.merged_into_ref == ""


def test_a_malformed_cloudevent_is_400_and_kept(accounting: Connection, client: HttpClient) -> None:
    event = qbo_cloud_event("invoice", 1)
    del event["id"]
    headers, body = qbo_cloud_delivery(VERIFIER, [event])

    response = post(client, headers, body)

    assert response.status_code == 400 and "'id'" in response.json()["error"]
    kept = WebhookDelivery.objects.get()
    assert kept.status == Status.REJECTED and kept.signature_valid and bytes(kept.body) == body


# ---- how jobs are told from customers --------------------------------------------------------------------


def _customers(connection: Connection) -> Any:
    return get_kind(connection).stream("customers")


def test_jobs_by_default_are_customers_with_job_true_and_a_parent_ref(accounting: Connection) -> None:
    stream = _customers(accounting)
    job = stream.normalise(
        {
            "Id": "9",
            "DisplayName": "P-1 Clinic",
            "Job": True,
            "ParentRef": {"value": "2"},
            "MetaData": {"LastUpdatedTime": "2026-01-01T00:00:00-08:00"},
        }
    )
    assert (job["object_type"], job["parent_ref"], job["match_key"]) == ("job", "2", "P-1")
    plain = stream.normalise(
        {
            "Id": "2",
            "DisplayName": "Acme",
            "Job": False,
            "MetaData": {"LastUpdatedTime": "2026-01-01T00:00:00-08:00"},
        }
    )
    assert plain["object_type"] == "customer"


def test_a_connection_can_tell_jobs_by_customer_type_and_name_its_parent_field(
    accounting: Connection,
) -> None:
    accounting.options = {
        **accounting.options,
        "field_map": {"job_customer_type": "Project", "job_parent": "ParentRef"},
    }
    stream = _customers(accounting)
    meta = {"LastUpdatedTime": "2026-01-01T00:00:00-08:00"}
    typed = stream.normalise(
        {
            "Id": "9",
            "DisplayName": "P-7 Depot",
            "Job": False,
            "MetaData": meta,
            "CustomerTypeRef": {"value": "31", "name": "Project"},
            "ParentRef": {"value": "3"},
        }
    )
    assert (typed["object_type"], typed["parent_ref"]) == ("job", "3")
    other = stream.normalise(
        {
            "Id": "10",
            "DisplayName": "Acme",
            "MetaData": meta,
            "CustomerTypeRef": {"value": "30", "name": "Retail"},
        }
    )
    assert other["object_type"] == "customer"
    accounting.options["field_map"]["job_parent"] = "BillToParentRef"
    with pytest.raises(Exception, match="job without BillToParentRef"):
        _customers(accounting).normalise(
            {"Id": "9", "DisplayName": "P-7", "MetaData": meta, "Job": True, "ParentRef": {"value": "3"}}
        )


def test_the_kind_declares_its_job_mappings_with_todays_names_as_defaults(accounting: Connection) -> None:
    kind = get_kind(accounting)
    assert {m.name: m.default for m in kind.field_mappings} == {
        "job_flag": "Job",
        "job_parent": "ParentRef",
        "job_customer_type": "",
    }


def test_a_sync_quarantines_a_job_the_mapping_cannot_place(accounting: Connection, company: Company) -> None:
    job = next(c for c in company.qbo_customers.values() if c.is_job)
    change_record(company, "quickbooks", "customer", job.id, parent_id=None)

    sync_stream(connection=accounting, stream="customers")

    bad = QuarantinedRecord.objects.get(connection=accounting, stream="customers")
    assert bad.external_id == job.id and "ParentRef" in bad.reason


# ---- notes -----------------------------------------------------------------------------------------------


def test_requestid_is_the_key_when_it_fits_and_a_stable_uuid_when_it_does_not() -> None:
    assert request_id("esc1:note_accounting:12") == "esc1:note_accounting:12"
    long_a, long_b = "x" * 60 + "a", "x" * 60 + "b"
    assert len(request_id(long_a)) <= REQUEST_ID_MAX
    assert request_id(long_a) == request_id(long_a) != request_id(long_b)


def test_a_retried_note_with_a_long_key_creates_one_attachable(
    accounting: Connection, company: Company, simulator: SimulatorServer
) -> None:
    job = next(c.id for c in company.qbo_customers.values() if c.is_job)
    key = "esc42:note_accounting:" + "accounting-with-a-very-long-slug:" + job

    first = get_kind(accounting).write_note(job, "Escalated", key)
    retried = get_kind(accounting).write_note(job, "Escalated", key, retry=True)
    other = get_kind(accounting).write_note(job, "Escalated", key.replace("esc42", "esc43"))

    assert first == retried != other
    assert [n["target"] for n in simulator.notes] == [job, job]


def test_admin_lists_ignored_events_with_their_reason_and_filters_them(
    accounting: Connection, company: Company, client: HttpClient, administrator: Any
) -> None:
    from django.urls import reverse

    invoice = sorted(company.qbo_invoices, key=int)[0]
    events = [qbo_cloud_event("Payment", 7, "Create"), qbo_cloud_event("invoice", invoice)]
    process_all(post(client, *qbo_cloud_delivery(VERIFIER, events)).json()["ids"])
    client.force_login(administrator)
    url = reverse("admin:connectors_webhookdelivery_changelist")

    ignored = client.get(url, {"ignored": "yes"})
    applied = client.get(url, {"ignored": "no"})

    assert ignored.status_code == applied.status_code == 200
    assert b"entity payment: 1" in ignored.content and ignored.context["cl"].result_count == 1
    assert b"entity payment" not in applied.content and applied.context["cl"].result_count == 1
