"""Vendor kinds own their edges: a new kind plugs into the receiver, processing and the sweep by its hooks
alone, its choice comes from the registry, and the generic modules name no vendor."""

from __future__ import annotations

import ast
import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.test import Client as HttpClient

from apps.connectors import operations, services
from apps.connectors.http import HttpClient as UpstreamClient
from apps.connectors.kinds import KINDS, ConnectorKind, Stream
from apps.connectors.kinds.base import Record, parse_datetime
from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.webhooks import processing, schemes, views
from apps.connectors.webhooks.processing import process_delivery
from apps.connectors.webhooks.schemes import Events, Headers, Hint, Inbound, Rejected
from apps.entities.models import Vendor

UPSTREAM: dict[str, Record] = {}  # what the "echo" vendor holds, by id


class EchoVendors(Stream):
    name = "suppliers"
    model = Vendor
    entity = "vendor"

    def pages(self, client: Any, cursor: Any, full: bool) -> Iterator[Any]:
        return iter(())

    def record_id(self, raw: Record) -> str:
        return str(raw["ref"])

    def normalise(self, raw: Record) -> Record:
        return {
            "external_id": str(raw["ref"]),
            "source_updated_at": parse_datetime(raw["changed"]),
            "name": raw["title"],
            "email": "",
        }


class Echo(ConnectorKind):
    """A vendor written for this test only: ids in its events, a shared-secret header, reads by id."""

    kind = "echo"
    label = "Echo (test)"
    stream_classes = [EchoVendors]
    receives_webhooks = True

    @classmethod
    def check_signature(cls, inbound: Inbound, secrets: list[str]) -> None:
        given = inbound.headers.get("x-echo-token", "").encode()
        if not schemes.any_equal((s.encode() for s in secrets), given):
            raise Rejected("token does not match")

    @classmethod
    def webhook_events(cls, payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
        hints = [Hint("suppliers", str(e["ref"]), e["op"]) for e in payload if e.get("kind") == "supplier"]
        others = (str(e.get("kind")) for e in payload if e.get("kind") != "supplier")
        return Events(hints, schemes.count_ignored(others))

    def auth_headers(self) -> dict[str, str]:
        return {}

    def fetch_records(
        self,
        client: UpstreamClient,
        stream: Stream,
        ids: Sequence[str],
        scopes: Mapping[str, str] | None = None,
    ) -> list[Record]:
        return [UPSTREAM[i] for i in ids if i in UPSTREAM]


@pytest.fixture
def echo(db: None, monkeypatch: pytest.MonkeyPatch, rule_calls: Any) -> Connection:
    monkeypatch.setitem(KINDS, "echo", Echo)
    UPSTREAM.clear()
    connection = Connection(slug="echo", kind="echo", base_url="http://127.0.0.1:9/")
    connection.webhook_secrets = ["t0ken"]
    connection.save()
    return connection


def _post(client: HttpClient, token: str, events: list[dict[str, Any]]) -> Any:
    return client.post(
        "/webhooks/echo/",
        data=json.dumps(events).encode(),
        content_type="application/json",
        headers={"X-Echo-Token": token},
    )


def test_a_new_kind_is_received_and_processed_through_its_hooks_alone(
    echo: Connection, client: HttpClient
) -> None:
    UPSTREAM["s1"] = {"ref": "s1", "changed": "2026-01-02T03:04:05Z", "title": "Acme Scaffolding"}
    events = [
        {"kind": "supplier", "ref": "s1", "op": "upsert"},
        {"kind": "invoice", "ref": "i9", "op": "upsert"},
    ]

    assert _post(client, "wrong", events).status_code == 401
    accepted = _post(client, "t0ken", events)
    assert accepted.status_code == 202, accepted.content
    outcome = process_delivery(accepted.json()["id"])

    assert outcome.status == "processed", outcome.error
    vendor = Vendor.objects.get(source=echo, external_id="s1")
    assert vendor.name == "Acme Scaffolding"
    assert vendor.source_updated_at == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    delivery = WebhookDelivery.objects.get(pk=accepted.json()["id"])
    assert delivery.summary["ignored_types"] == {"invoice": 1}


def test_a_record_the_new_kind_no_longer_has_is_tombstoned(echo: Connection, client: HttpClient) -> None:
    UPSTREAM["s2"] = {"ref": "s2", "changed": "2026-01-02T03:04:05Z", "title": "Gone Soon"}
    process_delivery(_post(client, "t0ken", [{"kind": "supplier", "ref": "s2", "op": "upsert"}]).json()["id"])
    del UPSTREAM["s2"]

    later = [{"kind": "supplier", "ref": "s2", "op": "upsert", "attempt": 2}]  # another body: a new delivery
    process_delivery(_post(client, "t0ken", later).json()["id"])

    assert Vendor.objects.get(source=echo, external_id="s2").deleted_at is not None


def test_a_kind_without_webhooks_refuses_them() -> None:
    inbound = Inbound("POST", (), {}, b"[]", 0.0)
    with pytest.raises(Rejected, match="receive no webhooks"):
        KINDS["csv"].webhook_verify(inbound, ["secret"])


def test_connection_kind_choices_are_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    field = Connection._meta.get_field("kind")
    assert field.choices == [(name, cls.label) for name, cls in KINDS.items()]
    assert {"hubspot", "quickbooks", "procore", "rest", "csv"} <= {name for name, _ in field.choices}
    monkeypatch.setitem(KINDS, "echo", Echo)
    assert ("echo", "Echo (test)") in Connection._meta.get_field("kind").choices


@pytest.mark.parametrize("module", [schemes, processing, views, operations, services])
def test_the_generic_webhook_and_sync_modules_name_no_vendor(module: Any) -> None:
    """A vendor's name in generic code means a branch adding a vendor would have to edit."""
    tree = ast.parse(Path(module.__file__).read_text())
    vendors = set(KINDS) - {"csv", "rest"}
    named = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in vendors
    }
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and any(v in node.module for v in vendors)
    }
    assert (named, imported) == (set(), set())
