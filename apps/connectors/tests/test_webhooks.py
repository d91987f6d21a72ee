"""Webhooks end to end: deliveries signed as each vendor signs them, through Django's test client, stored in
the inbox and processed against the simulator over loopback (the record is fetched where the vendor sends
ids). Processing is called directly; nothing is queued to a broker."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client as HttpClient

from apps.connectors.kinds import KINDS, Stream
from apps.connectors.kinds.base import Record, parse_datetime
from apps.connectors.kinds.quickbooks import webhooks as qbo_webhooks
from apps.connectors.kinds.rest import Rest
from apps.connectors.models import Connection, QuarantinedRecord, WebhookDelivery
from apps.connectors.services import sync_stream
from apps.connectors.webhooks import processing, schemes, tasks
from apps.connectors.webhooks.processing import process_delivery, sweep
from apps.connectors.webhooks.views import REJECTED_CAP
from apps.entities.models import ChangeOrder, Client, FinancialLine, Vendor
from apps.simulator import Company, SimulatorServer
from apps.simulator.webhooks import (
    change_record,
    event_for,
    hubspot_delivery,
    hubspot_event,
    new_standard_secret,
    procore_delivery,
    procore_event,
    qbo_delivery,
    qbo_entity,
    standard_delivery,
)

HS_SECRET = "hs-secret"
QBO_VERIFIER = "qbo-verifier-token"
PROCORE_AUTH = "Bearer procore-hook-credential"
REST_SECRET = new_standard_secret(seed=7)
HS_URL = "http://testserver/webhooks/crm/"
Status = WebhookDelivery.Status


# ---- a minimal "rest" kind: the generic REST connector's webhook edge over a fixed stream ----------------


class RestVendors(Stream):
    name = "vendors"
    model = Vendor
    entity = "vendor"

    def pages(self, client: Any, cursor: Any, full: bool) -> Iterator[Any]:
        return iter(())

    def normalise(self, raw: Record) -> Record:
        return {
            "external_id": str(raw["id"]),
            "source_updated_at": parse_datetime(raw["updated_at"]),
            "name": str(raw.get("name") or ""),
            "email": str(raw.get("email") or ""),
        }


class FakeRest(Rest):
    """The rest kind's webhook edge (Standard Webhooks) over one fixed stream instead of configured ones."""

    @property
    def streams(self) -> list[Stream]:
        return [RestVendors(self)]


@pytest.fixture
def hooks(
    connections: dict[str, Connection], monkeypatch: pytest.MonkeyPatch, rule_calls: list[Any]
) -> dict[str, Connection]:
    """The simulator's three connections with webhook secrets, and an in-house "rest" connection."""
    monkeypatch.setitem(KINDS, "rest", FakeRest)
    for slug, secret in (("accounting", QBO_VERIFIER), ("pm", PROCORE_AUTH)):
        connections[slug].webhook_secrets = [secret]
        connections[slug].save()
    rest = Connection(slug="inhouse", kind="rest", base_url="http://127.0.0.1:9/")
    rest.webhook_secrets = [REST_SECRET]
    rest.save()
    return {**connections, "inhouse": rest}


def post(client: HttpClient, slug: str, headers: dict[str, str], body: bytes, **extra: Any) -> Any:
    headers = dict(headers)
    content_type = headers.pop("Content-Type", "application/json")
    return client.post(f"/webhooks/{slug}/", data=body, content_type=content_type, headers=headers, **extra)


def accept(client: HttpClient, slug: str, headers: dict[str, str], body: bytes) -> int:
    response = post(client, slug, headers, body)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "accepted"
    return int(response.json()["id"])


def deliver_and_process_all(
    client: HttpClient, slug: str, headers: dict[str, str], body: bytes
) -> list[WebhookDelivery]:
    """Deliver, then process every inbox row the delivery made (one per event for batching vendors)."""
    response = post(client, slug, headers, body)
    assert response.status_code == 202, response.content
    ids = [int(pk) for pk in response.json()["ids"]]
    for delivery_id in ids:
        outcome = process_delivery(delivery_id)
        assert outcome.status == "processed", outcome.error
    return list(WebhookDelivery.objects.filter(pk__in=ids).order_by("pk"))


def deliver_and_process(
    client: HttpClient, slug: str, headers: dict[str, str], body: bytes
) -> WebhookDelivery:
    """Deliver and process; the first inbox row of the delivery."""
    return deliver_and_process_all(client, slug, headers, body)[0]


def summed(deliveries: list[WebhookDelivery]) -> dict[str, Any]:
    """The summaries of a delivery's rows added up (counts summed, ignored types merged)."""
    total: dict[str, Any] = {"ignored_types": {}}
    for delivery in deliveries:
        for key, value in (delivery.summary or {}).items():
            if key == "ignored_types":
                for label, n in value.items():
                    total[key][label] = total[key].get(label, 0) + n
            else:
                total[key] = total.get(key, 0) + value
    return total


def vendor_record(vendor_id: str, updated: dt.datetime, name: str) -> dict[str, Any]:
    return {"id": vendor_id, "updated_at": updated.isoformat(), "name": name, "email": "ap@example.com"}


# ---- each vendor: a change upstream, then its webhook ---------------------------------------------------


def test_hubspot_company_change_is_fetched_and_applied(
    hooks: dict[str, Connection], company: Company, client: HttpClient, rule_calls: Any
) -> None:
    sync_stream(connection=hooks["crm"], stream="companies")
    target = sorted(company.hs_companies)[3]
    record = change_record(company, "hubspot", "company", target, name="Renamed Holdings")

    headers, body = hubspot_delivery(HS_URL, HS_SECRET, [event_for("hubspot", "company", record)])
    delivery = deliver_and_process(client, "crm", headers, body)

    entity = Client.objects.get(source=hooks["crm"], external_id=target)
    assert entity.name == "Renamed Holdings"
    assert delivery.status == Status.PROCESSED and delivery.attempts == 1 and delivery.signature_valid
    assert delivery.event_id == KINDS["hubspot"].webhook_event_id({}, body, json.loads(body))
    assert rule_calls == [({"client": {entity.pk}}, "webhook")]
    assert rule_calls.since == [delivery.received_at]  # its coalescing window starts at its arrival


def test_quickbooks_ids_only_event_fetches_the_invoice(
    hooks: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    sync_stream(connection=hooks["accounting"], stream="invoices")
    target = next(i for i, inv in sorted(company.qbo_invoices.items()) if inv.balance > 0)
    record = change_record(company, "quickbooks", "invoice", target, balance=0)

    headers, body = qbo_delivery(QBO_VERIFIER, [event_for("quickbooks", "invoice", record)])
    delivery = deliver_and_process(client, "accounting", headers, body)

    line = FinancialLine.objects.get(source=hooks["accounting"], external_id=target)
    assert line.balance == Decimal("0.00")
    assert line.source_updated_at == parse_datetime(
        qbo_entity("invoice", target, last_updated=record.updated)["lastUpdated"]
    )
    # One inbox row per QuickBooks event, identified by what the event says (legacy events have no id).
    assert delivery.event_id == qbo_webhooks.quickbooks_events(json.loads(body), {})[0].key


def test_procore_event_fetches_the_change_order(
    hooks: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    sync_stream(connection=hooks["pm"], stream="change_orders")
    target = sorted(company.pc_change_orders)[5]
    old = company.pc_change_orders[target]
    record = change_record(
        company, "procore", "change_order", target, status="void", grand_total=old.grand_total + 12_345
    )

    headers, body = procore_delivery(PROCORE_AUTH, event_for("procore", "change_order", record))
    deliver_and_process(client, "pm", headers, body)

    entity = ChangeOrder.objects.get(source=hooks["pm"], external_id=str(target))
    assert entity.status == "void"
    assert entity.amount == Decimal(record.grand_total) / 100


def test_standard_webhook_carries_the_record(hooks: dict[str, Connection], client: HttpClient) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    headers, body = standard_delivery(REST_SECRET, "vendors.created", vendor_record("V-1", now, "Acme Steel"))

    delivery = deliver_and_process(client, "inhouse", headers, body)

    vendor = Vendor.objects.get(source=hooks["inhouse"], external_id="V-1")
    assert vendor.name == "Acme Steel" and vendor.deleted_at is None
    assert delivery.event_id == headers["webhook-id"]


# ---- at least once, out of order -------------------------------------------------------------------------


def test_a_duplicate_delivery_is_answered_and_changes_nothing(
    hooks: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    sync_stream(connection=hooks["accounting"], stream="invoices")
    target = sorted(company.qbo_invoices)[0]
    record = change_record(company, "quickbooks", "invoice", target, balance=1)
    headers, body = qbo_delivery(QBO_VERIFIER, [event_for("quickbooks", "invoice", record)])
    first = deliver_and_process(client, "accounting", headers, body)
    line = FinancialLine.objects.get(source=hooks["accounting"], external_id=target)

    again = post(client, "accounting", headers, body)

    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert WebhookDelivery.objects.count() == 1
    assert process_delivery(first.pk).status == "skipped"  # a redelivered task message: already processed
    unchanged = FinancialLine.objects.get(pk=line.pk)
    assert (unchanged.synced_at, unchanged.content_hash) == (line.synced_at, line.content_hash)
    assert WebhookDelivery.objects.get(pk=first.pk).attempts == 1


def test_an_older_version_never_overwrites_a_newer_one(
    hooks: dict[str, Connection], client: HttpClient
) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=2)
    newer = standard_delivery(
        REST_SECRET, "vendors.updated", vendor_record("V-9", t0 + dt.timedelta(seconds=30), "New")
    )
    older = standard_delivery(REST_SECRET, "vendors.updated", vendor_record("V-9", t0, "Old"))

    deliver_and_process(client, "inhouse", *newer)
    kept = Vendor.objects.get(external_id="V-9")
    deliver_and_process(client, "inhouse", *older)

    vendor = Vendor.objects.get(external_id="V-9")
    assert vendor.name == "New" and vendor.synced_at == kept.synced_at


def test_a_late_update_event_cannot_resurrect_a_deleted_company(
    hooks: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    sync_stream(connection=hooks["crm"], stream="companies")
    target = sorted(company.hs_companies)[1]
    stale_update = hubspot_event(
        target, "company.propertyChange", occurred_at=company.hs_companies[target].updated
    )
    deleted_at_ms = int(time.time() * 1000)
    company.delete("hubspot", "company", target)

    deliver_and_process(
        client,
        "crm",
        *hubspot_delivery(
            HS_URL, HS_SECRET, [hubspot_event(target, "company.deletion", occurred_at=deleted_at_ms)]
        ),
    )
    deliver_and_process(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, [stale_update]))

    entity = Client.objects.get(source=hooks["crm"], external_id=target)
    assert entity.deleted_at is not None


def test_a_deletion_older_than_the_version_held_is_ignored(
    hooks: dict[str, Connection], client: HttpClient
) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=2)
    deliver_and_process(
        client,
        "inhouse",
        *standard_delivery(REST_SECRET, "vendors.created", vendor_record("V-3", t0, "Restored")),
    )
    older = int(t0.timestamp()) - 60  # the deletion happened before the version we hold (then a restore)
    headers, body = standard_delivery(REST_SECRET, "vendors.deleted", {"id": "V-3"}, timestamp=older)

    deliver_and_process(client, "inhouse", headers, body)

    assert Vendor.objects.get(external_id="V-3").deleted_at is None


# ---- deletes become tombstones ---------------------------------------------------------------------------


def test_delete_events_tombstone_for_every_vendor(
    hooks: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    sync_stream(connection=hooks["accounting"], stream="invoices")
    sync_stream(connection=hooks["pm"], stream="change_orders")
    invoice = sorted(company.qbo_invoices)[2]
    change_order = sorted(company.pc_change_orders)[2]
    company.delete("quickbooks", "invoice", invoice)
    company.delete("procore", "change_order", change_order)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    deliver_and_process(
        client,
        "inhouse",
        *standard_delivery(
            REST_SECRET, "vendors.created", vendor_record("V-5", now - dt.timedelta(seconds=5), "Gone Soon")
        ),
    )

    deliver_and_process(
        client, "accounting", *qbo_delivery(QBO_VERIFIER, [qbo_entity("invoice", invoice, "Delete")])
    )
    deliver_and_process(
        client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("change_order", change_order, "delete"))
    )
    deliver_and_process(
        client,
        "inhouse",
        *standard_delivery(REST_SECRET, "vendors.deleted", vendor_record("V-5", now, "Gone Soon")),
    )

    assert FinancialLine.objects.get(source=hooks["accounting"], external_id=invoice).deleted_at is not None
    assert ChangeOrder.objects.get(source=hooks["pm"], external_id=str(change_order)).deleted_at is not None
    assert Vendor.objects.get(external_id="V-5").deleted_at is not None
    # Tombstones, not deletions: the rows are still there, and other records are untouched.
    assert FinancialLine.objects.filter(source=hooks["accounting"], deleted_at__isnull=False).count() == 1


def test_an_update_for_a_record_gone_upstream_tombstones_it(
    hooks: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    sync_stream(connection=hooks["pm"], stream="change_orders")
    target = sorted(company.pc_change_orders)[7]
    company.delete("procore", "change_order", target)

    deliver_and_process(
        client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("change_order", target, "update"))
    )

    assert ChangeOrder.objects.get(external_id=str(target)).deleted_at is not None


def test_a_bill_line_removed_upstream_is_tombstoned(
    hooks: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    sync_stream(connection=hooks["accounting"], stream="bills")
    bill_id, bill = next(
        (i, b) for i, b in sorted(company.qbo_bills.items()) if sum(1 for line in b.lines if line.job_id) >= 2
    )
    job_lines = [n for n, line in enumerate(bill.lines) if line.job_id]
    kept = tuple(line for n, line in enumerate(bill.lines) if n != job_lines[-1])
    record = change_record(
        company, "quickbooks", "bill", bill_id, lines=kept, total=sum(line.amount for line in kept)
    )
    before = set(
        FinancialLine.objects.filter(external_id__startswith=f"{bill_id}:").values_list(
            "external_id", flat=True
        )
    )

    deliver_and_process(
        client, "accounting", *qbo_delivery(QBO_VERIFIER, [event_for("quickbooks", "bill", record)])
    )

    live = set(
        FinancialLine.objects.live()
        .filter(external_id__startswith=f"{bill_id}:")
        .values_list("external_id", flat=True)
    )
    assert len(before) == len(job_lines) and len(live) == len(job_lines) - 1 and live < before


# ---- refused deliveries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["crm", "accounting", "pm", "inhouse"])
def test_a_bad_signature_is_401_kept_as_rejected_and_never_processed(
    hooks: dict[str, Connection], client: HttpClient, slug: str
) -> None:
    forged = {
        "crm": hubspot_delivery(HS_URL, "not-the-secret", [hubspot_event(1)]),
        "accounting": qbo_delivery("not-the-verifier", [qbo_entity("invoice", 1)]),
        "pm": procore_delivery("Bearer guessed", procore_event("project", 1)),
        "inhouse": standard_delivery(new_standard_secret(seed=1), "vendors.updated", {"id": "1"}),
    }[slug]

    response = post(client, slug, *forged)

    assert response.status_code == 401 and "error" in response.json()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.signature_valid, bytes(delivery.body)) == (
        Status.REJECTED,
        False,
        forged[1],
    )
    assert process_delivery(delivery.pk).status == "skipped"
    assert WebhookDelivery.objects.get().status == Status.REJECTED
    # A rejected copy never blocks the genuine delivery of the same event.
    if slug == "accounting":
        assert post(client, slug, *qbo_delivery(QBO_VERIFIER, [qbo_entity("invoice", 1)])).status_code == 202


def test_a_missing_signature_and_a_tampered_body_are_refused(
    hooks: dict[str, Connection], client: HttpClient
) -> None:
    headers, body = qbo_delivery(QBO_VERIFIER, [qbo_entity("invoice", 1)])
    unsigned = {k: v for k, v in headers.items() if k != "intuit-signature"}

    assert post(client, "accounting", unsigned, body).status_code == 401
    assert post(client, "accounting", headers, body.replace(b'"1"', b'"2"')).status_code == 401
    assert WebhookDelivery.objects.filter(status=Status.REJECTED).count() == 2


def test_rotation_accepts_current_and_listed_previous_secrets_only(
    hooks: dict[str, Connection], client: HttpClient
) -> None:
    rest = hooks["inhouse"]
    new = new_standard_secret(seed=99)
    rest.webhook_secrets = [new, REST_SECRET]
    rest.save()
    data = {"id": "R-1", "updated_at": "2026-01-01T00:00:00Z", "name": "x"}

    assert (
        post(client, "inhouse", *standard_delivery(REST_SECRET, "vendors.updated", data)).status_code == 202
    )
    assert post(client, "inhouse", *standard_delivery(new, "vendors.updated", data)).status_code == 202
    # A sender mid-rotation lists both signatures.
    assert (
        post(client, "inhouse", *standard_delivery([new, REST_SECRET], "vendors.updated", data)).status_code
        == 202
    )
    rest.webhook_secrets = [new]
    rest.save()
    assert (
        post(client, "inhouse", *standard_delivery(REST_SECRET, "vendors.updated", data)).status_code == 401
    )
    assert post(client, "inhouse", *standard_delivery(new, "vendors.updated", data)).status_code == 202

    crm = hooks["crm"]
    crm.webhook_secrets = ["hs-new", HS_SECRET]
    crm.save()
    for secret in ("hs-new", HS_SECRET):
        assert post(client, "crm", *hubspot_delivery(HS_URL, secret, [hubspot_event(1)])).status_code == 202


def test_stale_and_future_timestamps_are_401(hooks: dict[str, Connection], client: HttpClient) -> None:
    six_minutes = 6 * 60
    now = time.time()
    old_hs = hubspot_delivery(
        HS_URL, HS_SECRET, [hubspot_event(1)], timestamp=int((now - six_minutes) * 1000)
    )
    new_hs = hubspot_delivery(
        HS_URL, HS_SECRET, [hubspot_event(1)], timestamp=int((now + six_minutes) * 1000)
    )
    old_sw = standard_delivery(REST_SECRET, "vendors.updated", {"id": "1"}, timestamp=int(now) - six_minutes)
    fresh_hs = hubspot_delivery(HS_URL, HS_SECRET, [hubspot_event(2)], timestamp=int((now - 240) * 1000))

    for slug, delivery in (("crm", old_hs), ("crm", new_hs), ("inhouse", old_sw)):
        response = post(client, slug, *delivery)
        assert response.status_code == 401 and "tolerance" in response.json()["error"]
    assert post(client, "crm", *fresh_hs).status_code == 202
    assert WebhookDelivery.objects.filter(status=Status.REJECTED).count() == 3


def test_hubspot_signs_the_full_uri(hooks: dict[str, Connection], client: HttpClient) -> None:
    wrong_path = hubspot_delivery("http://testserver/webhooks/other/", HS_SECRET, [hubspot_event(1)])
    wrong_method = hubspot_delivery(HS_URL, HS_SECRET, [hubspot_event(1)], method="PUT")

    assert post(client, "crm", *wrong_path).status_code == 401
    assert post(client, "crm", *wrong_method).status_code == 401
    # Behind a TLS proxy the request may look like http while HubSpot signed https (or SITE_URL).
    assert (
        post(
            client,
            "crm",
            *hubspot_delivery("https://testserver/webhooks/crm/", HS_SECRET, [hubspot_event(1)]),
        ).status_code
        == 202
    )


def test_stored_rejections_are_capped_per_sender(hooks: dict[str, Connection], client: HttpClient) -> None:
    for n in range(REJECTED_CAP + 5):
        assert (
            post(client, "accounting", *qbo_delivery("forged", [qbo_entity("invoice", n + 1)])).status_code
            == 401
        )
    assert WebhookDelivery.objects.filter(status=Status.REJECTED).count() == REJECTED_CAP

    other = post(
        client, "accounting", *qbo_delivery("forged", [qbo_entity("invoice", 1)]), REMOTE_ADDR="10.0.0.7"
    )
    assert other.status_code == 401
    assert WebhookDelivery.objects.filter(status=Status.REJECTED, remote_addr="10.0.0.7").count() == 1
    assert (
        post(client, "accounting", *qbo_delivery(QBO_VERIFIER, [qbo_entity("invoice", 1)])).status_code == 202
    )


@pytest.mark.parametrize(
    ("slug", "payload"),
    [
        ("crm", b"{not json"),
        ("crm", b'{"objectId": 1}'),
        ("crm", b"[]"),
        ("accounting", b'{"eventNotifications": [{"dataChangeEvent": {"entities": [{"name": "Invoice"}]}}]}'),
        ("accounting", b"\xff\xfe"),
        ("pm", b'{"resource_name": "Projects", "event_type": "update"}'),
        ("inhouse", b'{"type": "vendors.exploded", "data": {"id": 1}}'),
        ("inhouse", b'{"type": "vendors.updated", "data": []}'),
    ],
)
def test_a_malformed_body_is_400_with_a_json_error(
    hooks: dict[str, Connection], client: HttpClient, slug: str, payload: bytes
) -> None:
    sign = {
        "crm": lambda b: hubspot_signed(b),
        "accounting": lambda b: ({"intuit-signature": qbo_sig(b)}, b),
        "pm": lambda b: ({"Authorization": PROCORE_AUTH}, b),
        "inhouse": lambda b: standard_signed(b),
    }[slug]
    headers, body = sign(payload)

    response = post(client, slug, headers, body)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json" and response.json()["error"]
    if slug != "accounting":
        assert not WebhookDelivery.objects.exists()
        return
    # QuickBooks keeps it for forensics, byte for byte, as an authentic but refused delivery.
    kept = WebhookDelivery.objects.get()
    assert kept.status == Status.REJECTED and kept.signature_valid
    assert kept.error.startswith("malformed: ") and bytes(kept.body) == body


def hubspot_signed(body: bytes) -> tuple[dict[str, str], bytes]:
    from apps.simulator.webhooks import hubspot_signature

    stamp = str(int(time.time() * 1000))
    return {
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_signature(HS_SECRET, "POST", HS_URL, body, stamp),
    }, body


def qbo_sig(body: bytes) -> str:
    from apps.simulator.webhooks import qbo_signature

    return qbo_signature(QBO_VERIFIER, body)


def standard_signed(body: bytes) -> tuple[dict[str, str], bytes]:
    from apps.simulator.webhooks import standard_signature

    stamp = str(int(time.time()))
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": stamp,
        "webhook-signature": standard_signature(REST_SECRET, "msg_1", stamp, body),
    }, body


def test_a_body_over_one_mebibyte_is_413(hooks: dict[str, Connection], client: HttpClient) -> None:
    big = [qbo_entity("invoice", n) for n in range(1, 15_000)]
    headers, body = qbo_delivery(QBO_VERIFIER, big)
    assert len(body) > schemes.MAX_BODY

    response = post(client, "accounting", headers, body)

    assert response.status_code == 413 and response.json()["error"]
    assert not WebhookDelivery.objects.exists()  # refused before it is read: nothing to keep
    exactly = b" " * (schemes.MAX_BODY - 2) + b"{}"
    assert post(client, "accounting", {"intuit-signature": qbo_sig(exactly)}, exactly).status_code == 400


def test_unknown_slug_is_404_and_other_methods_405(hooks: dict[str, Connection], client: HttpClient) -> None:
    response = post(client, "nope", *qbo_delivery(QBO_VERIFIER, [qbo_entity("invoice", 1)]))
    assert response.status_code == 404 and response.json()["error"]
    assert client.get("/webhooks/accounting/").status_code == 405


def test_secrets_never_reach_stored_headers_or_answers(
    hooks: dict[str, Connection], client: HttpClient
) -> None:
    answers = [
        post(client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("project", 1))),
        post(client, "pm", *procore_delivery("Bearer wrong-guess", procore_event("project", 2))),
        post(client, "crm", *hubspot_delivery(HS_URL, HS_SECRET, [hubspot_event(1)])),
        post(client, "inhouse", *standard_delivery(REST_SECRET, "vendors.updated", {"id": "1"})),
    ]

    stored = json.dumps(list(WebhookDelivery.objects.values_list("headers", flat=True)))
    text = stored + "".join(a.content.decode() for a in answers)
    for secret in (PROCORE_AUTH, "procore-hook-credential", "wrong-guess", HS_SECRET, REST_SECRET):
        assert secret not in text
    headers = WebhookDelivery.objects.filter(status=Status.REJECTED).get().headers
    assert headers["authorization"] == schemes.REDACTED and headers["content-type"] == "application/json"


# ---- queueing, failures, the sweeper ---------------------------------------------------------------------


def test_an_accepted_delivery_is_queued_after_commit(
    hooks: dict[str, Connection],
    client: HttpClient,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks.process_webhook_delivery, "apply_async", lambda args, **kw: queued.append(args))

    with django_capture_on_commit_callbacks(execute=True):
        delivery_id = accept(client, "accounting", *qbo_delivery(QBO_VERIFIER, [qbo_entity("invoice", 1)]))
        assert queued == []  # nothing before the row is committed

    assert queued == [(delivery_id,)]


def test_a_broker_that_is_down_does_not_lose_the_delivery(
    hooks: dict[str, Connection],
    client: HttpClient,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(tasks.process_webhook_delivery, "apply_async", down)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_id = accept(client, "accounting", *qbo_delivery(QBO_VERIFIER, [qbo_entity("invoice", 1)]))
    assert WebhookDelivery.objects.get(pk=delivery_id).status == Status.RECEIVED


def test_a_failing_delivery_is_recorded_retried_and_never_blocks_others(
    hooks: dict[str, Connection], company: Company, simulator: SimulatorServer, client: HttpClient
) -> None:
    sync_stream(connection=hooks["pm"], stream="change_orders")
    first, second = sorted(company.pc_change_orders)[:2]
    failing = accept(client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("change_order", first)))
    fine = accept(client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("change_order", second)))
    simulator.faults.add("status", path_prefix="/rest/", status=503, count=None)

    outcome = process_delivery(failing)
    simulator.faults.clear()

    assert outcome.status == "failed" and outcome.retry
    row = WebhookDelivery.objects.get(pk=failing)
    assert row.status == Status.FAILED and "503" in row.error and row.attempts == 1
    assert process_delivery(fine).status == "processed"
    assert process_delivery(failing).status == "processed"  # a retry claims a failed row
    assert WebhookDelivery.objects.get(pk=failing).attempts == 2


def test_a_refusal_is_permanent_and_a_rate_limit_carries_its_retry_after(
    hooks: dict[str, Connection],
    company: Company,
    simulator: SimulatorServer,
    client: HttpClient,
    settings: Any,
) -> None:
    """One vocabulary (``apps.errors``): the vendor's 403 is ``Permanent``, not retried (the same request
    gets the same answer); its 429 is ``Transient``, retried no sooner than its Retry-After."""
    sync_stream(connection=hooks["pm"], stream="change_orders")
    first, second = sorted(company.pc_change_orders)[:2]
    refused = accept(client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("change_order", first)))
    limited = accept(client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("change_order", second)))

    simulator.faults.add("status", path_prefix="/rest/", status=403, count=None)
    outcome = process_delivery(refused)
    simulator.faults.clear()
    assert outcome.status == "failed" and not outcome.retry and outcome.retry_after is None
    assert "403" in WebhookDelivery.objects.get(pk=refused).error

    # Longer than a sync waits in place: the client gives up at once and hands the advice on.
    settings.FULCRUM = {**settings.FULCRUM, "HTTP_MAX_RETRY_AFTER": 5.0}
    simulator.faults.add("rate_limit", path_prefix="/rest/", retry_after=7, count=None)
    outcome = process_delivery(limited)
    simulator.faults.clear()
    assert outcome.status == "failed" and outcome.retry
    assert outcome.retry_after is not None and 6 <= outcome.retry_after <= 8  # the reset, from now


def test_a_bad_record_is_quarantined_and_the_delivery_processed(
    hooks: dict[str, Connection], client: HttpClient
) -> None:
    headers, body = standard_delivery(
        REST_SECRET, "vendors.updated", {"id": "V-7", "updated_at": "yesterday"}
    )

    delivery = deliver_and_process(client, "inhouse", headers, body)

    assert delivery.status == Status.PROCESSED
    assert QuarantinedRecord.objects.get().reason.startswith("webhook: not a date-time")


def test_the_task_processes_a_delivery(hooks: dict[str, Connection], client: HttpClient) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    delivery_id = accept(
        client,
        "inhouse",
        *standard_delivery(REST_SECRET, "vendors.created", vendor_record("V-2", now, "Via Task")),
    )

    result = tasks.process_webhook_delivery.apply(args=(delivery_id,))

    assert result.successful() and "processed" in result.get()
    assert Vendor.objects.get(external_id="V-2").name == "Via Task"


def test_the_sweeper_requeues_stuck_rows(
    hooks: dict[str, Connection], client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ids = [
        accept(
            client,
            "inhouse",
            *standard_delivery(REST_SECRET, "vendors.created", vendor_record(f"S-{n}", now, f"Stuck {n}")),
        )
        for n in range(4)
    ]
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    WebhookDelivery.objects.filter(pk=ids[0]).update(status_changed_at=long_ago)  # never claimed
    WebhookDelivery.objects.filter(pk=ids[1]).update(
        status=Status.PROCESSING, attempts=1, status_changed_at=long_ago
    )
    WebhookDelivery.objects.filter(pk=ids[2]).update(status=Status.PROCESSING, attempts=1)  # still working
    queued: list[int] = []
    monkeypatch.setattr(
        tasks.process_webhook_delivery, "apply_async", lambda args, **kw: queued.append(args[0])
    )

    result = tasks.sweep_webhooks.apply()

    assert result.get() == "re-queued 2 webhook deliveries" and queued == ids[:2]
    assert WebhookDelivery.objects.get(pk=ids[1]).status == Status.RECEIVED
    assert sweep() == []  # each row waits another lease before the next sweep
    for delivery_id in queued:
        assert process_delivery(delivery_id).status == "processed"
    assert set(Vendor.objects.values_list("external_id", flat=True)) == {"S-0", "S-1"}
    spent = ids[3]
    WebhookDelivery.objects.filter(pk=spent).update(
        status=Status.PROCESSING, attempts=processing.MAX_ATTEMPTS, status_changed_at=long_ago
    )
    assert sweep() == [] and WebhookDelivery.objects.get(pk=spent).status == Status.FAILED


def test_a_lost_worker_is_presumed_after_the_lease_not_five_minutes(
    hooks: dict[str, Connection], client: HttpClient, settings: Any
) -> None:
    settings.FULCRUM = {**settings.FULCRUM, "WEBHOOK_LEASE_SECONDS": 10}
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    delivery_id = accept(
        client, "inhouse", *standard_delivery(REST_SECRET, "vendors.created", vendor_record("L-1", now, "L"))
    )
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        status=Status.PROCESSING, attempts=1, status_changed_at=now - dt.timedelta(seconds=5)
    )
    assert sweep() == []  # within its lease: still someone's
    queued = accept(
        client, "inhouse", *standard_delivery(REST_SECRET, "vendors.created", vendor_record("L-2", now, "Q"))
    )
    WebhookDelivery.objects.filter(pk=queued).update(status_changed_at=now - dt.timedelta(seconds=40))
    assert sweep() == []  # never claimed: waiting in a queue, not lost
    WebhookDelivery.objects.filter(pk=delivery_id).update(status_changed_at=now - dt.timedelta(seconds=11))
    assert sweep() == [delivery_id]
    row = WebhookDelivery.objects.get(pk=delivery_id)
    assert row.status == Status.RECEIVED and "after 10 s" in row.error


def test_a_holder_overtaken_by_the_sweeper_commits_nothing(
    hooks: dict[str, Connection], client: HttpClient
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    delivery_id = accept(
        client, "inhouse", *standard_delivery(REST_SECRET, "vendors.created", vendor_record("F-1", now, "F"))
    )
    slow = processing.claim(delivery_id)  # a worker that stalls past its lease
    assert slow is not None
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    WebhookDelivery.objects.filter(pk=delivery_id).update(status_changed_at=long_ago)
    assert sweep() == [delivery_id]
    newer = processing.claim(delivery_id)
    assert newer is not None and newer.attempts == 2

    with pytest.raises(processing.LeaseLost):
        processing._process(slow)

    assert not Vendor.objects.filter(external_id="F-1").exists()  # rolled back
    assert WebhookDelivery.objects.get(pk=delivery_id).status == Status.PROCESSING
    processing._process(newer)
    assert Vendor.objects.get(external_id="F-1").name == "F"
    assert WebhookDelivery.objects.get(pk=delivery_id).status == Status.PROCESSED


def test_a_spent_rate_budget_defers_the_delivery_without_spending_an_attempt(
    hooks: dict[str, Connection], company: Company, client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.connectors.kinds import get_kind
    from apps.connectors.ratelimit import RateBudget, redis_client

    pm = hooks["pm"]
    sync_stream(connection=pm, stream="change_orders")
    pm.options = {**pm.options, "rate_budget": {"calls": 1, "seconds": 60}}
    pm.save()
    budget = get_kind(pm).rate_budget()
    assert isinstance(budget, RateBudget)
    redis_client(budget.url).delete(budget.key, budget.hold_key)  # a fresh window (the sync spent some)
    budget()  # the only call of this window
    target = sorted(company.pc_change_orders)[0]
    delivery_id = accept(client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("change_order", target)))
    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        tasks.process_webhook_delivery, "apply_async", lambda *args, **kw: queued.append((args, kw))
    )

    started = time.monotonic()
    result = tasks.process_webhook_delivery.apply(args=(delivery_id,), retries=2)

    assert time.monotonic() - started < 10  # no minute-long sleep in the worker's slot
    assert "deferred" in result.get()
    [((args, kwargs), options)] = queued
    assert args == (delivery_id,) and kwargs == {"deferrals": 1}
    assert 50 < options["countdown"] <= 60 and options["retries"] == 2  # the retry count is kept
    row = WebhookDelivery.objects.get(pk=delivery_id)
    assert row.status == Status.RECEIVED and row.attempts == 0 and "rate budget" in row.error


def test_the_first_webhook_retries_are_quick_then_back_off_and_a_reset_always_wins(settings: Any) -> None:
    settings.FULCRUM = {
        **settings.FULCRUM,
        "WEBHOOK_QUICK_RETRIES": 2,
        "WEBHOOK_QUICK_BASE": 0.1,
        "WEBHOOK_BACKOFF_BASE": 1.0,
        "WEBHOOK_BACKOFF_CAP": 30.0,
    }
    first = [tasks.retry_wait(0, None, None) for _ in range(100)]
    assert all(0.1 <= w <= 0.3 for w in first)  # a 5xx or a timeout: soon, never at once
    second = [tasks.retry_wait(1, 0.3, None) for _ in range(100)]
    assert all(0.1 <= w <= 0.9 for w in second)
    third = [tasks.retry_wait(2, 0.9, None) for _ in range(200)]
    assert all(0 <= w <= 4.0 for w in third) and max(third) > 1.0  # full jitter again, base 1 s × 2^2
    assert all(0 <= tasks.retry_wait(9, 30.0, None) <= 30.0 for _ in range(50))
    # A 429's reset (or a Retry-After) is honoured on a quick retry as on any other, up to RETRY_AFTER_CAP.
    assert tasks.retry_wait(0, None, 2.5) == 2.5
    assert tasks.retry_wait(1, 0.2, 2.5) == 2.5
    assert tasks.retry_wait(0, None, 10_000.0) == tasks.RETRY_AFTER_CAP
    settings.FULCRUM = {**settings.FULCRUM, "WEBHOOK_QUICK_RETRIES": 0}  # off: the old schedule
    assert all(0 <= tasks.retry_wait(0, None, None) <= 1.0 for _ in range(50))


def test_a_failed_webhook_task_retries_quickly_carrying_its_last_wait(
    hooks: dict[str, Connection],
    company: Company,
    simulator: SimulatorServer,
    client: HttpClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync_stream(connection=hooks["pm"], stream="change_orders")
    target = sorted(company.pc_change_orders)[0]
    delivery_id = accept(client, "pm", *procore_delivery(PROCORE_AUTH, procore_event("change_order", target)))
    simulator.faults.add("status", path_prefix="/rest/", status=500, count=None)  # every call fails
    retried: list[dict[str, Any]] = []

    def retry(**kwargs: Any) -> Exception:
        retried.append(kwargs)
        return RuntimeError("retry")

    monkeypatch.setattr(tasks.process_webhook_delivery, "retry", retry)
    with pytest.raises(RuntimeError, match="retry"):
        tasks.process_webhook_delivery.run(delivery_id)
    simulator.faults.clear()
    [first] = retried
    assert 0.1 <= first["countdown"] <= 0.3
    assert first["kwargs"] == {"deferrals": 0, "waited": first["countdown"]}
    assert WebhookDelivery.objects.get(pk=delivery_id).status == Status.FAILED


def test_webhook_retries_start_within_a_second_and_honour_the_upstream(settings: Any) -> None:
    from apps.errors import configured_backoff

    settings.FULCRUM = {**settings.FULCRUM, "WEBHOOK_BACKOFF_BASE": 1.0, "WEBHOOK_BACKOFF_CAP": 30.0}
    assert all(0 <= configured_backoff("WEBHOOK", 0) <= 1.0 for _ in range(20))
    assert all(0 <= configured_backoff("WEBHOOK", 10) <= 30 for _ in range(20))
    longest = tasks.RETRY_AFTER_CAP
    assert configured_backoff("WEBHOOK", 0, retry_after=7, longest=longest) == 7
    assert configured_backoff("WEBHOOK", 0, retry_after=10_000, longest=longest) == longest


# ---- a burst ---------------------------------------------------------------------------------------------


def test_a_burst_of_1000_deliveries_with_20_percent_duplicates_loses_nothing(
    hooks: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    # What is tested is the inbox, not Intuit's 500 calls/min (its own tests): 800 fetches would wait ~2 min.
    accounting = hooks["accounting"]
    accounting.options = {**accounting.options, "rate_budget": False}
    accounting.save()
    invoices = sorted(company.qbo_invoices)
    unique = [
        qbo_delivery(
            QBO_VERIFIER,
            [qbo_entity("invoice", invoices[n % len(invoices)], last_updated=1_700_000_000_000 + n * 1000)],
        )
        for n in range(800)
    ]
    sends = unique + [unique[n * 4] for n in range(200)]

    answers = [post(client, "accounting", *delivery) for delivery in sends]

    assert [a.status_code for a in answers].count(202) == 800
    assert [a.json()["status"] for a in answers[800:]] == ["duplicate"] * 200
    ids = sorted(a.json()["id"] for a in answers[:800])
    assert sorted(WebhookDelivery.objects.values_list("id", flat=True)) == ids
    for delivery_id in ids:
        assert process_delivery(delivery_id).status == "processed"
    assert WebhookDelivery.objects.filter(status=Status.PROCESSED).count() == 800
    assert FinancialLine.objects.filter(source=hooks["accounting"]).count() == len(set(invoices[:800]))


# ---- the receiver's schemes on their own -----------------------------------------------------------------


def test_the_receiver_verifies_the_standard_webhooks_test_vector() -> None:
    body = b'{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,bogus v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    inbound = schemes.Inbound("POST", (), headers, body, now=1614265330 + 299)

    KINDS["rest"].webhook_verify(inbound, ["whsec_other", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    with pytest.raises(schemes.Rejected, match="tolerance"):
        KINDS["rest"].webhook_verify(schemes.Inbound("POST", (), headers, body, now=1614265330 + 301), ["x"])
    with pytest.raises(schemes.Rejected, match="no webhook secret"):
        KINDS["rest"].webhook_verify(inbound, [])


def test_event_ids_and_redaction() -> None:
    events = [{"eventId": 3}, {"eventId": 1}]
    hs_id = KINDS["hubspot"].webhook_event_id({}, b"[]", events)
    assert hs_id.startswith("hubspot:") and len(hs_id) <= 255
    assert KINDS["hubspot"].webhook_event_id({}, b"x", events[::-1]) == hs_id
    assert KINDS["procore"].webhook_event_id({}, b"{}", {"ulid": "01H", "id": 5}) == "01H"
    assert KINDS["quickbooks"].webhook_event_id({}, b"abc", {}) == schemes.body_hash(b"abc")
    assert KINDS["rest"].webhook_event_id({"webhook-id": "msg_1"}, b"{}") == "msg_1"
    redacted = schemes.redact(
        [
            ("Authorization", "Bearer x"),
            ("X-HubSpot-Signature-v3", "sig"),
            ("Cookie", "c"),
            ("User-Agent", "ua"),
        ]
    )
    assert redacted == {
        "authorization": schemes.REDACTED,
        "x-hubspot-signature-v3": schemes.REDACTED,
        "cookie": schemes.REDACTED,
        "user-agent": "ua",
    }


def test_events_for_other_objects_realms_and_companies_are_ignored() -> None:
    hs = [
        {"objectId": 5, "subscriptionType": "contact.creation"},
        {"objectId": 6, "subscriptionType": "company.merge", "mergedObjectIds": [7]},
    ]
    assert [(h.external_id, h.op, h.merged) for h in KINDS["hubspot"].webhook_hints(hs, {}, {})] == [
        ("6", "merge", ("7",)),
    ]
    qbo = {
        "eventNotifications": [
            {
                "realmId": "other",
                "dataChangeEvent": {"entities": [{"name": "Invoice", "id": "1", "operation": "Update"}]},
            },
            {
                "realmId": "R",
                "dataChangeEvent": {
                    "entities": [
                        {"name": "Vendor", "id": "2", "operation": "Update"},
                        {"name": "Bill", "id": "3", "operation": "Delete"},
                    ]
                },
            },
        ]
    }
    assert [
        (h.stream, h.external_id, h.op) for h in KINDS["quickbooks"].webhook_hints(qbo, {"realm_id": "R"}, {})
    ] == [("bills", "3", "delete")]
    procore = {"resource_name": "Submittals", "resource_id": 4, "event_type": "delete", "company_id": 1}
    assert KINDS["procore"].webhook_hints(procore, {"company_id": 4242}, {}) == []
    assert [
        h.stream
        for h in KINDS["procore"].webhook_hints({**procore, "company_id": 4242}, {"company_id": 4242}, {})
    ] == ["submittals"]
