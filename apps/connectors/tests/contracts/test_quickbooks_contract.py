# ruff: noqa: S608 - QuickBooks query language, not SQL
"""QuickBooks Online contract: Intuit's documented shapes (``contracts/quickbooks/``) hold the simulator's
answers, the connector's requests and the documented examples alike, and a conversation assembled from
the documented examples is replayed through the connector over loopback HTTP."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from apps.connectors.kinds import KINDS, get_kind
from apps.connectors.kinds.quickbooks import catchup, streams
from apps.connectors.kinds.quickbooks import webhooks as qbo_webhooks
from apps.connectors.models import Connection
from apps.connectors.services import sync_stream
from apps.connectors.webhooks import schemes
from apps.entities.models import FinancialLine, SourceObject
from apps.simulator import REALM_ID, Company, SimulatorServer
from apps.simulator.quickbooks import merge_customers
from apps.simulator.webhooks import qbo_cloud_delivery, qbo_cloud_event, qbo_delivery, qbo_entity

from . import assert_conforms, example, load

VENDOR = "quickbooks"
TOKEN = {"Authorization": "Bearer sim-qbo-token"}


def _params(path: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}


# ---- the documented examples hold the schemas ------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "name", "part"),
    [
        ("query-response.schema.json", "query-response.example.json", None),
        ("cdc-response.schema.json", "cdc-response.example.json", None),
        ("cloudevents.schema.json", "cloudevents.example.json", "events"),
        ("cloudevents.schema.json", "cloudevents-sdk.example.json", "events"),
        ("legacy-webhook.schema.json", "legacy-webhook.example.json", None),
        ("attachable-note-create.request.schema.json", "attachable-note-create.request.example.json", None),
        ("attachable.response.schema.json", "attachable-note-create.response.example.json", None),
    ],
)
def test_each_documented_example_conforms_to_its_schema(schema: str, name: str, part: str | None) -> None:
    data = example(VENDOR, name)
    assert_conforms(VENDOR, schema, data[part] if part else data)


def test_every_contract_file_names_its_doc_page() -> None:
    from . import HERE

    for path in sorted((HERE / VENDOR).glob("*.json")):
        data = json.loads(path.read_text())
        note = data.get("$comment") or data.get("_source") or ""
        assert "https://" in note or "github.com/" in note, path.name


def test_the_schemas_refuse_what_the_docs_do_not_show() -> None:
    query = load(VENDOR, "query-request.schema.json")
    for text in (
        "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime, Id STARTPOSITION 1 MAXRESULTS 1000",
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2026-01-01T00:00:00Z'",
        "SELECT * FROM Invoice MAXRESULTS 1001",
        "SELECT * FROM Invoice ORDER BY MetaData.LastUpdatedTime",
    ):
        with pytest.raises(AssertionError):
            assert_conforms(VENDOR, "query-request.schema.json", {"query": text, "minorversion": "75"})
    assert query["properties"]["minorversion"] == {"const": "75"}
    deleted_with_payload = example(VENDOR, "cdc-response.example.json")
    deleted_with_payload["CDCResponse"][0]["QueryResponse"][0]["Customer"][1]["DisplayName"] = "x"
    with pytest.raises(AssertionError):
        assert_conforms(VENDOR, "cdc-response.schema.json", deleted_with_payload)


# ---- the simulator answers in the documented shapes ------------------------------------------------------


def test_the_simulators_answers_and_webhooks_conform(simulator: SimulatorServer, company: Company) -> None:
    base = f"{simulator.base_url}/v3/company/{REALM_ID}"
    for entity in ("Customer", "Invoice", "Bill", "Purchase", "Estimate"):
        query = f"SELECT * FROM {entity} ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000"
        answer = requests.get(
            f"{base}/query", params={"query": query, "minorversion": "75"}, headers=TOKEN, timeout=10
        )
        assert answer.status_code == 200
        assert_conforms(VENDOR, "query-response.schema.json", answer.json())

    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    customers = sorted((c.id for c in company.qbo_customers.values() if not c.is_job), key=int)
    merge_customers(company, customers[0], customers[1])
    company.delete("quickbooks", "invoice", sorted(company.qbo_invoices, key=int)[0])
    cdc = requests.get(
        f"{base}/cdc",
        params={"entities": "Customer,Invoice,Estimate", "changedSince": since, "minorversion": "75"},
        headers=TOKEN,
        timeout=10,
    ).json()
    assert_conforms(VENDOR, "cdc-response.schema.json", cdc)
    statuses = [
        o.get("status")
        for qr in cdc["CDCResponse"][0]["QueryResponse"]
        for v in qr.values()
        if isinstance(v, list)
        for o in v
    ]
    assert statuses.count("Deleted") == 2

    request = example(VENDOR, "attachable-note-create.request.example.json")
    invoice = sorted(company.qbo_invoices, key=int)[1]
    request["body"]["AttachableRef"][0]["EntityRef"]["value"] = invoice
    note = requests.post(
        f"{base}/attachable", params=request["params"], json=request["body"], headers=TOKEN, timeout=10
    )
    assert note.status_code == 200
    assert_conforms(VENDOR, "attachable.response.schema.json", note.json())

    _headers, cloud = qbo_cloud_delivery(
        "v", [qbo_cloud_event("invoice", 1, op) for op in ("Create", "Delete")]
    )
    assert_conforms(VENDOR, "cloudevents.schema.json", json.loads(cloud))
    _headers, legacy = qbo_delivery("v", [qbo_entity("customer", 1, "Merge", deleted_id=2)])
    assert_conforms(VENDOR, "legacy-webhook.schema.json", json.loads(legacy))


# ---- the connector's requests take only documented forms -------------------------------------------------


def test_every_request_the_connector_sends_conforms(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    accounting = connections["accounting"]
    for stream in ("customers", "invoices", "bills", "purchases", "estimates"):
        sync_stream(connection=accounting, stream=stream)
    sync_stream(connection=accounting, stream="invoices")  # incremental: a WHERE on LastUpdatedTime
    kind = get_kind(accounting)
    client = kind.client()
    kind.fetch_records(client, kind.stream("invoices"), sorted(company.qbo_invoices)[:3])
    client.close()
    catchup.quickbooks_catch_up(connection=accounting, since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    job = next(c.id for c in company.qbo_customers.values() if c.is_job)
    kind.write_note(job, "Escalated", "esc1:note_accounting:" + "x" * 80)

    sent = [path for method, path in simulator.requests_log if path.startswith("/v3/company/")]
    kinds = {urlsplit(p).path.rsplit("/", 1)[-1] for p in sent}
    assert kinds == {"query", "cdc", "attachable"}
    for path in sent:
        params = _params(path)
        endpoint = urlsplit(path).path.rsplit("/", 1)[-1]
        if endpoint == "query":
            assert_conforms(VENDOR, "query-request.schema.json", params)
        elif endpoint == "cdc":
            assert_conforms(VENDOR, "cdc-request.schema.json", params)
        else:
            assert len(params["requestid"]) <= 50 and params["minorversion"] == "75"
    assert any("WHERE MetaData.LastUpdatedTime >=" in _params(p).get("query", "") for p in sent)


# ---- documented webhooks, read by the connector ----------------------------------------------------------


def test_the_documented_webhooks_are_read_and_verified() -> None:
    options = {"realm_id": "310687"}
    (account,) = qbo_webhooks.quickbooks_events(
        example(VENDOR, "cloudevents.example.json")["events"], options
    )
    assert (account.key, account.entity_id, account.operation) == (
        "ce:88cd52aa-33b6-4351-9aa4-47572edbd068",
        "1234",
        "Create",
    )
    assert account.ignored == "entity account"  # Accounts are not synced: recorded, not refused
    (klass,) = qbo_webhooks.quickbooks_events(
        example(VENDOR, "cloudevents-sdk.example.json")["events"], options
    )
    assert klass.ignored == "entity class"

    legacy = example(VENDOR, "legacy-webhook.example.json")
    hints = KINDS[VENDOR].webhook_hints(legacy, {"realm_id": "1185883450"}, {})
    assert [(h.stream, h.external_id, h.op) for h in hints] == [("customers", "1", "upsert")]
    assert KINDS[VENDOR].webhook_events(legacy, {"realm_id": "1185883450"}, {}).ignored == {
        "entity Vendor": 1
    }

    signed = example(VENDOR, "legacy-webhook-signed.example.json")
    body = signed["body"].encode()
    inbound = schemes.Inbound("POST", (), {"intuit-signature": signed["intuit_signature"]}, body, 0)
    KINDS[VENDOR].webhook_verify(inbound, [signed["verifier_token"]])


# ---- a conversation from the documented examples, replayed over loopback ---------------------------------


class Replay(ThreadingHTTPServer):
    """Answers the scripted requests in order, checking each is the one expected; records what came."""

    daemon_threads = True

    def __init__(self, script: list[tuple[str, str, dict[str, str], Any]]) -> None:
        self.script = list(script)
        self.received: list[tuple[str, str, dict[str, str], Any]] = []
        self.failures: list[str] = []
        super().__init__(("127.0.0.1", 0), _ReplayHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ReplayHandler(BaseHTTPRequestHandler):
    server: Replay

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path, params = urlsplit(self.path).path, _params(self.path)
        self.server.received.append((self.command, path, params, body))
        if not self.server.script:
            self.server.failures.append(f"unexpected {self.command} {self.path}")
            self.send_response(500)
            self.end_headers()
            return
        method, want_path, want_params, answer = self.server.script.pop(0)
        if (method, want_path, want_params) != (self.command, path, params):
            self.server.failures.append(
                f"expected {method} {want_path} {want_params}, got {self.command} {path} {params}"
            )
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer


@pytest.fixture
def replay() -> Iterator[Any]:
    servers: list[Replay] = []

    def start(script: list[tuple[str, str, dict[str, str], Any]]) -> Replay:
        server = Replay(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _customer(record: dict[str, Any], id_: str, when: str, **extra: Any) -> dict[str, Any]:
    return {**record, "Id": id_, "MetaData": {"CreateTime": when, "LastUpdatedTime": when}, **extra}


def test_a_multi_page_documented_conversation_replays_through_the_connector(
    db: None, replay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "MAX_RESULTS", 2)
    documented = example(VENDOR, "query-response.example.json")
    amy, aviary = documented["QueryResponse"]["Customer"]
    # A third customer between the two, with the id the documented CDC answer later reports deleted.
    third = _customer(amy, "2", "2015-11-01T09:00:00-07:00", DisplayName="Bill's Windsurf Shop")
    path = "/v3/company/1185883450/query"
    order = "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 2"

    def page(records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "QueryResponse": {"Customer": records, "startPosition": 1, "maxResults": len(records)},
            "time": documented["time"],
        }

    # Page 1 is full (two records, two timestamps): the next page re-anchors at the last timestamp with
    # ">=" and re-reads the job; page 3 is short, so the read ends there.
    t2 = "2015-11-01T16:00:00+00:00"  # the third customer's 09:00:00-07:00 in UTC
    t3 = "2016-10-05T10:07:04+00:00"  # the job's 03:07:04-07:00 in UTC
    script = [
        (
            "GET",
            path,
            {"query": f"SELECT * FROM Customer {order}", "minorversion": "75"},
            page([amy, third]),
        ),
        (
            "GET",
            path,
            {
                "query": f"SELECT * FROM Customer WHERE MetaData.LastUpdatedTime >= '{t2}' {order}",
                "minorversion": "75",
            },
            page([third, aviary]),
        ),
        (
            "GET",
            path,
            {
                "query": f"SELECT * FROM Customer WHERE MetaData.LastUpdatedTime >= '{t3}' {order}",
                "minorversion": "75",
            },
            page([aviary]),
        ),
    ]
    server = replay(script)
    connection = Connection.objects.create(
        slug="qbo-replay",
        kind="quickbooks",
        base_url=server.url,
        options={"realm_id": "1185883450", "rate_budget": False, "settle_seconds": 0},
    )
    connection.credentials = {"access_token": "documented"}
    connection.save()

    run = sync_stream(connection=connection, stream="customers", full=True)

    assert server.failures == [] and server.script == []
    assert run.status == "succeeded", run.error
    for _method, _path, params, _body in server.received:
        assert_conforms(VENDOR, "query-request.schema.json", params)
    for *_request, answer in script:
        assert_conforms(VENDOR, "query-response.schema.json", answer)
    stored = {
        o.external_id: (o.object_type, o.parent_ref)
        for o in SourceObject.objects.filter(connection=connection)
    }
    assert stored == {"1": ("customer", ""), "43": ("job", "1"), "2": ("customer", "")}

    # The documented CDC answer through the catch-up: the changed customer and the new estimate upserted,
    # the deleted customer tombstoned.
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cdc = example(VENDOR, "cdc-response.example.json")
    cdc_server = replay(
        [
            (
                "GET",
                "/v3/company/1185883450/cdc",
                {
                    "entities": "Customer,Invoice,Bill,Purchase,Estimate",
                    "changedSince": streams.query_time(since),
                    "minorversion": "75",
                },
                cdc,
            )
        ]
    )
    connection.base_url = cdc_server.url
    connection.save()
    counts = catchup.quickbooks_catch_up(connection=connection, since=since)
    assert cdc_server.failures == [] and counts["tombstoned"] == 1
    assert_conforms(VENDOR, "cdc-request.schema.json", cdc_server.received[0][2])
    assert SourceObject.objects.get(connection=connection, external_id="2").deleted_at is not None
    assert FinancialLine.objects.get(source=connection, external_id="95").amount == 582.5

    # The documented note create, retried: the same requestid both times, so QuickBooks replays its answer.
    answer = example(VENDOR, "attachable-note-create.response.example.json")
    expected = {"requestid": "esc7:note_accounting:43", "minorversion": "75"}
    notes = replay([("POST", "/v3/company/1185883450/attachable", expected, answer)] * 2)
    connection.base_url = notes.url
    connection.save()
    kind = get_kind(connection)
    first = kind.write_note("43", "Escalated: CO 004", "esc7:note_accounting:43")
    again = kind.write_note("43", "Escalated: CO 004", "esc7:note_accounting:43", retry=True)
    assert notes.failures == [] and first == again == {"id": "100000000004191632"}
    for _method, _path, params, body in notes.received:
        assert_conforms(
            VENDOR, "attachable-note-create.request.schema.json", {"params": params, "body": body}
        )
