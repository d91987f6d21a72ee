"""Vendor-signed webhook deliveries: signatures recomputed independently, shapes, upstream changes paired
with their events, and sending over HTTP. No Django."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from apps.simulator import PROCORE_COMPANY_ID, REALM_ID
from apps.simulator.common import parse_instant
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
    send,
    standard_delivery,
    standard_signature,
)

from .conftest import make_company


def b64_hmac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def test_hubspot_v3_signs_method_uri_body_and_timestamp() -> None:
    url = "https://fulcrum.example.com/webhooks/crm/"
    events = [hubspot_event(101, "company.propertyChange", occurred_at=1_700_000_000_000, event_id=9)]

    headers, body = hubspot_delivery(url, "client-secret", events, timestamp=1_700_000_000_123)

    assert json.loads(body) == events
    assert headers["X-HubSpot-Request-Timestamp"] == "1700000000123"
    expected = b64_hmac(b"client-secret", b"POST" + url.encode() + body + b"1700000000123")
    assert headers["X-HubSpot-Signature-v3"] == expected
    assert events[0]["objectId"] == 101 and events[0]["eventId"] == 9


def test_hubspot_timestamp_defaults_to_now_in_milliseconds() -> None:
    headers, _ = hubspot_delivery("http://x/", "s", [hubspot_event(1)])
    assert abs(int(headers["X-HubSpot-Request-Timestamp"]) - time.time() * 1000) < 5_000


def test_quickbooks_signs_the_raw_body_with_the_verifier() -> None:
    entities = [
        qbo_entity("invoice", 130, "Update", last_updated=1_700_000_000_000),
        qbo_entity("Bill", 7, "Delete"),
    ]

    headers, body = qbo_delivery("verifier", entities)

    assert headers["intuit-signature"] == b64_hmac(b"verifier", body)
    notification = json.loads(body)["eventNotifications"][0]
    assert notification["realmId"] == REALM_ID
    assert [(e["name"], e["id"], e["operation"]) for e in notification["dataChangeEvent"]["entities"]] == [
        ("Invoice", "130", "Update"),
        ("Bill", "7", "Delete"),
    ]
    assert notification["dataChangeEvent"]["entities"][0]["lastUpdated"].endswith("-08:00")


def test_procore_sends_the_configured_authorization_value() -> None:
    event = procore_event("change_order", 9700001, "update", project_id=12, timestamp=1_700_000_000_000)

    headers, body = procore_delivery("Bearer hook-value", event)

    assert headers["Authorization"] == "Bearer hook-value"
    sent = json.loads(body)
    assert (sent["resource_name"], sent["resource_id"], sent["event_type"], sent["project_id"]) == (
        "Change Order Packages",
        9700001,
        "update",
        12,
    )
    # The documented v2.0 example's timestamp has microseconds: "2025-02-06T23:34:12.246562Z".
    assert sent["company_id"] == PROCORE_COMPANY_ID and sent["timestamp"] == "2023-11-14T22:13:20.000000Z"
    assert sent["ulid"] and sent["id"] and sent["api_version"] == "v2.0"


def test_procore_payload_format_v4_has_string_ids_reason_and_resource_type() -> None:
    event = procore_event(
        "submittal", 42, "update", project_id=12, timestamp=1_700_000_000_000, payload_version="v4.0"
    )
    assert event == {
        "id": event["id"],
        "timestamp": "2023-11-14T22:13:20.000000Z",
        "reason": "update",
        "company_id": str(PROCORE_COMPANY_ID),
        "project_id": "12",
        "user_id": "7001",
        "resource_type": "Submittals",
        "resource_id": "42",
    }
    v3 = procore_event("submittal", 42, payload_version="v3.0")
    assert v3["related_resources"] == [] and v3["api_version"] == "v3.0"


def test_standard_webhooks_matches_the_published_test_vector() -> None:
    # From the Standard Webhooks reference libraries' test suite.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = standard_signature(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_delivery_signs_with_every_secret_given() -> None:
    old, new = new_standard_secret(seed=1), new_standard_secret(seed=2)
    data = {"id": "V-1", "name": "Acme"}

    headers, body = standard_delivery(
        [new, old], "vendors.updated", data, msg_id="msg_1", timestamp=1_700_000_000
    )

    assert json.loads(body) == {"type": "vendors.updated", "data": data}
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("msg_1", "1700000000")
    signatures = headers["webhook-signature"].split(" ")
    for secret, signature in zip((new, old), signatures, strict=True):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        assert signature == "v1," + b64_hmac(key, b"msg_1.1700000000." + body)
    assert new_standard_secret(seed=1) == old and len(base64.b64decode(old[6:])) == 24


def test_a_changed_record_comes_with_its_event() -> None:
    company = make_company()
    invoice_id = sorted(company.qbo_invoices)[0]
    before = company.qbo_invoices[invoice_id].updated

    record = change_record(company, "quickbooks", "invoice", invoice_id, balance=0)
    event = event_for("quickbooks", "invoice", record)

    assert record.balance == 0 and record.updated > before and record.sync_token == 1
    assert event["id"] == invoice_id and event["operation"] == "Update"
    assert parse_instant(event["lastUpdated"]) == record.updated
    # Without fields: one realistic mutation (deterministic for a seed).
    co_id = sorted(company.pc_change_orders)[0]
    status = company.pc_change_orders[co_id].status
    changed = change_record(company, "procore", "change_order", co_id, seed=3)
    assert changed.status != status
    event = event_for("procore", "change_order", changed, "update")
    assert (event["resource_id"], event["project_id"]) == (co_id, changed.project_id)
    hs = change_record(company, "hubspot", "company", sorted(company.hs_companies)[0], name="X")
    assert event_for("hubspot", "company", hs, "delete")["subscriptionType"] == "company.deletion"


class _Sink(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        status = 401 if self.headers.get("Authorization") == "wrong" else 202
        answer = json.dumps({"status": "accepted"} if status == 202 else {"error": "nope"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[str]:
    _Sink.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_send_posts_the_exact_signed_bytes(sink: str) -> None:
    headers, body = procore_delivery("Bearer ok", procore_event("project", 1))

    assert send(f"{sink}/webhooks/pm/", headers, body) == (202, {"status": "accepted"})
    assert send(f"{sink}/webhooks/pm/", {**headers, "Authorization": "wrong"}, body) == (
        401,
        {"error": "nope"},
    )
    path, received_headers, received_body = _Sink.received[0]
    assert path == "/webhooks/pm/" and received_body == body
    assert received_headers["Authorization"] == "Bearer ok"
