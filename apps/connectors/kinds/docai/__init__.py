"""Azure AI Document Intelligence: documents an AI tool classified and read, as ``document`` entities.

The tool's output is Azure's ``analyzeResult`` exactly as the analyze operation returns it
(docs/vendors/docai.md cites each field): ``modelId``, ``apiVersion``, ``documents[]`` each with ``docType``,
``confidence`` and typed ``fields`` (``type``, ``valueCurrency {amount, currencyCode}``, ``valueString``,
``valueDate``, ``valueNumber``, ``content``, ``confidence``). It arrives two ways:

* pushed to ``POST /webhooks/<slug>/``, signed with Standard Webhooks, as
  ``{"type": "document.analyzed", "data": {"id": <the tool's document id>, "analyzeResult": {...}}}`` or
  ``{"type": "document.deleted", "data": {"id": ...}}`` (:func:`document_events`);
* pulled from the tool's results endpoint (``options.results_path``, default ``/documents``), listed with
  Azure's paged-list convention ``{"value": [...], "nextLink": ...}``, each item an analyze operation
  (``status``, ``createdDateTime``, ``lastUpdatedDateTime``, ``analyzeResult``) with the tool's ``id``; one
  item by id at ``<results_path>/<id>``.

Which extracted field feeds which document field is the connection's mapping (``options.field_map``), with
the prebuilt invoice model's names as defaults (``FIELD_MAPPINGS``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from apps.connectors.http import HttpClient, UpstreamError, UpstreamPermanent
from apps.connectors.kinds.base import (
    BadRecord,
    ConfigurationError,
    ConnectorKind,
    Cursor,
    FieldMapping,
    Page,
    Record,
    Stream,
    cursor_key,
    make_cursor,
    parse_date,
    parse_datetime,
    parse_money,
)
from apps.connectors.webhooks.schemes import Events, Headers, Inbound, body_hash, verify_standard
from apps.entities.models import Document

TOOL = "azure-document-intelligence"
# Analyze operation states (AnalyzeOperation.status): only a succeeded one carries a result to load.
SUCCEEDED = "succeeded"
OPERATION_STATES = frozenset({"notStarted", "running", "failed", "succeeded", "canceled", "skipped"})
# DocumentFieldType values and the property each keeps its value in.
VALUE_KEYS = {
    "string": "valueString",
    "date": "valueDate",
    "time": "valueTime",
    "phoneNumber": "valuePhoneNumber",
    "number": "valueNumber",
    "integer": "valueInteger",
    "selectionMark": "valueSelectionMark",
    "countryRegion": "valueCountryRegion",
    "signature": "valueSignature",
    "currency": "valueCurrency",
    "address": "valueAddress",
    "boolean": "valueBoolean",
    "array": "valueArray",
    "object": "valueObject",
}

# document field -> the analyzeResult field it is read from by default (prebuilt-invoice's names).
FIELD_MAPPINGS: tuple[FieldMapping, ...] = (
    FieldMapping("amount", "InvoiceTotal", "the extracted amount (prebuilt-invoice: InvoiceTotal)"),
    FieldMapping("vendor_name", "VendorName", "who issued it (prebuilt-invoice: VendorName)"),
    FieldMapping("client_name", "CustomerName", "who it is addressed to (prebuilt-invoice: CustomerName)"),
    FieldMapping(
        "project_ref", "PurchaseOrder", "the job or project number it names (prebuilt-invoice: PurchaseOrder)"
    ),
    FieldMapping("invoice_ref", "InvoiceId", "the invoice number it names (prebuilt-invoice: InvoiceId)"),
    FieldMapping("document_date", "InvoiceDate", "its date (prebuilt-invoice: InvoiceDate)"),
    FieldMapping(
        "change_order_ref",
        "ChangeOrderNumber",
        "the change order number it names: a custom extraction model's field (prebuilt-invoice has none)",
    ),
)


class Malformed(ValueError):
    """Not an ``analyzeResult`` of the documented shape (the webhook answers 400, a pull quarantines)."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Malformed(f"{where} must be a number, got {value!r}")
    return float(value)


def _confidence(value: Any, where: str) -> float | None:
    if value is None:
        return None
    number = _number(value, where)
    if not 0 <= number <= 1:
        raise Malformed(f"{where} must be between 0 and 1, got {value!r}")
    return number


def field_value(field: Mapping[str, Any], where: str) -> Any:
    """A DocumentField's value by its ``type`` (a currency as its amount), else its verbatim ``content``."""
    kind = field.get("type")
    if not isinstance(kind, str):
        raise Malformed(f"{where}.type must be a string")
    key = VALUE_KEYS.get(kind)
    value = field.get(key) if key else None
    if kind == "currency" and value is not None:
        if not isinstance(value, dict) or "amount" not in value:
            raise Malformed(f"{where}.valueCurrency must be an object with an amount")
        return _number(value["amount"], f"{where}.valueCurrency.amount")
    if value is None:
        content = field.get("content")
        return content if isinstance(content, str) else None
    return value


def read_analysis(analyze_result: Any) -> dict[str, Any]:
    """What Fulcrum keeps of one analyzeResult: model, version, the first document's type, confidence and
    fields (name -> {type, value, confidence, content}); Malformed names the first thing out of shape."""
    if not isinstance(analyze_result, dict):
        raise Malformed("analyzeResult must be an object")
    model_id = analyze_result.get("modelId")
    if not isinstance(model_id, str) or not model_id:
        raise Malformed("analyzeResult.modelId must be a non-empty string")
    documents = analyze_result.get("documents", [])
    if not isinstance(documents, list):
        raise Malformed("analyzeResult.documents must be a list")
    out: dict[str, Any] = {
        "model_id": model_id,
        "model_version": str(analyze_result.get("apiVersion") or ""),
        "label": "",
        "confidence": None,
        "fields": {},
    }
    if not documents:
        return out
    first = documents[0]
    if not isinstance(first, dict) or not isinstance(first.get("docType"), str):
        raise Malformed("analyzeResult.documents[0].docType must be a string")
    out["label"] = first["docType"]
    out["confidence"] = _confidence(first.get("confidence"), "analyzeResult.documents[0].confidence")
    fields = first.get("fields") or {}
    if not isinstance(fields, dict):
        raise Malformed("analyzeResult.documents[0].fields must be an object")
    for name, field in fields.items():
        where = f"analyzeResult.documents[0].fields.{name}"
        if not isinstance(field, dict):
            raise Malformed(f"{where} must be an object")
        value = field_value(field, where)
        currency = field.get("valueCurrency") if field.get("type") == "currency" else None
        out["fields"][name] = {
            "type": field["type"],
            "value": value,
            "confidence": _confidence(field.get("confidence"), f"{where}.confidence"),
            "content": field.get("content") if isinstance(field.get("content"), str) else None,
            **(
                {"currency": str(currency.get("currencyCode") or "")}
                if isinstance(currency, dict) and currency.get("currencyCode")
                else {}
            ),
        }
    return out


def _text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    return str(value).strip()[:limit]


def document_record(raw: Mapping[str, Any], mapping: Mapping[str, str], *, tool: str = TOOL) -> Record:
    """One document's entity fields from ``{"id", "analyzeResult", "lastUpdatedDateTime"?, ...}``."""
    doc_id = raw.get("id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or not str(doc_id).strip():
        raise Malformed("data.id must be the tool's document id")
    analysis = read_analysis(raw.get("analyzeResult"))
    fields = analysis["fields"]

    def mapped(name: str) -> dict[str, Any]:
        found = fields.get(mapping[name])
        return found if isinstance(found, dict) else {}

    amount_field = mapped("amount")
    try:
        amount = parse_money(amount_field.get("value"), required=False) if amount_field else None
        document_date = parse_date(mapped("document_date").get("value"))
    except BadRecord as exc:
        raise Malformed(f"{mapping['amount']} / {mapping['document_date']}: {exc.reason}") from None
    updated = raw.get("lastUpdatedDateTime") or raw.get("createdDateTime")
    try:
        version = parse_datetime(updated)
    except BadRecord as exc:
        raise Malformed(f"lastUpdatedDateTime: {exc.reason}") from None
    analyzed = raw.get("createdDateTime") or updated
    return {
        "external_id": str(doc_id).strip(),
        "source_updated_at": version,
        "tool": tool,
        "model_id": analysis["model_id"][:100],
        "model_version": analysis["model_version"][:64],
        "label": analysis["label"][:100],
        "confidence": analysis["confidence"],
        "amount": amount,
        "amount_confidence": amount_field.get("confidence"),
        "currency": _text(amount_field.get("currency"), 3),
        "vendor_name": _text(mapped("vendor_name").get("value"), 255),
        "client_name": _text(mapped("client_name").get("value"), 255),
        "project_ref": _text(mapped("project_ref").get("value"), 64),
        "change_order_ref": _text(mapped("change_order_ref").get("value"), 64),
        "invoice_ref": _text(mapped("invoice_ref").get("value"), 64),
        "document_date": document_date,
        "analyzed_at": parse_datetime(analyzed),
        "extracted": {
            name: {
                "value": str(f["value"]) if isinstance(f["value"], Decimal) else f["value"],
                "confidence": f["confidence"],
            }
            for name, f in fields.items()
            if f["value"] is None or isinstance(f["value"], str | int | float | bool)
        },
    }


class Documents(Stream):
    """Analysis results of the tool's documents, oldest change first."""

    name = "documents"
    model = Document
    entity = "document"
    kind: DocAi

    def _path(self) -> str:
        return str((self.kind.connection.options or {}).get("results_path") or "/documents")

    def pages(self, client: HttpClient, cursor: Cursor, full: bool) -> Iterator[Page]:
        params: dict[str, Any] | None = {"top": 100}
        if cursor.get("updated_at") and not full:
            params = {**(params or {}), "updatedSince": cursor["updated_at"]}
        path = self._path()
        while True:
            body, _ = client.request_json("GET", path, params=params)
            if not isinstance(body, dict) or not isinstance(body.get("value"), list):
                raise UpstreamPermanent(f"GET {path}: expected {{'value': [...]}}", status=200)
            records = [r for r in body["value"] if isinstance(r, dict)]
            for record in records:
                try:
                    moment = parse_datetime(
                        record.get("lastUpdatedDateTime") or record.get("createdDateTime")
                    )
                except BadRecord:
                    continue
                cursor = max(cursor, make_cursor(moment, record.get("id")), key=cursor_key)
            yield Page(records, cursor)
            following = body.get("nextLink")
            if not following or not records:
                return
            following = client.url(str(following))
            if urlsplit(following).netloc != urlsplit(client.base_url).netloc:
                # The session carries the key: never send it where the upstream points us.
                raise UpstreamPermanent(f"GET {path}: nextLink leads to another host", status=200)
            path, params = following, None

    def normalise(self, raw: Record) -> Record:
        status = raw.get("status", SUCCEEDED)
        if status != SUCCEEDED:
            raise BadRecord(f"analysis {raw.get('id')!r} is {status!r}, not succeeded")
        try:
            return document_record(raw, self.kind.mapping(), tool=self.kind.tool())
        except Malformed as exc:
            raise BadRecord(str(exc)) from None

    def record_id(self, raw: Record) -> str:
        return str(raw.get("id") or "")


class DocAi(ConnectorKind):
    kind = "docai"
    label = "Document AI (Azure AI Document Intelligence)"
    stream_classes: ClassVar[list[type[Stream]]] = [Documents]
    field_mappings = FIELD_MAPPINGS
    receives_webhooks = True  # Standard Webhooks
    keeps_malformed = True  # a malformed analysis is kept (signature valid, rejected) for forensics

    @classmethod
    def check_signature(cls, inbound: Inbound, secrets: list[str]) -> None:
        verify_standard(inbound, secrets)

    @classmethod
    def webhook_events(cls, payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
        from .webhooks import events

        return events(payload, options, headers)

    @classmethod
    def webhook_event_id(cls, headers: Headers, body: bytes, payload: Any = None) -> str:
        from apps.connectors.kinds.rest.webhooks import event_id

        return event_id(headers) or body_hash(body)

    def mapping(self) -> dict[str, str]:
        return {m.name: self.mapped(m.name) for m in self.field_mappings}

    def tool(self) -> str:
        return str((self.connection.options or {}).get("tool") or TOOL)

    def auth_headers(self) -> dict[str, str]:
        """Azure's key header (``Ocp-Apim-Subscription-Key``), or a bearer token where one is given."""
        credentials = self.connection.credentials or {}
        if credentials.get("api_key"):
            return {"Ocp-Apim-Subscription-Key": str(credentials["api_key"])}
        if credentials.get("access_token"):
            return {"Authorization": f"Bearer {credentials['access_token']}"}
        raise ConfigurationError(f"connection {self.connection.slug!r} needs credentials.api_key")

    def fetch_records(
        self,
        client: HttpClient,
        stream: Stream,
        ids: Sequence[str],
        scopes: Mapping[str, str] | None = None,
    ) -> list[Record]:
        """The current analysis of each id (``<results_path>/<id>``); ids gone (404, 410) are omitted."""
        assert isinstance(stream, Documents)
        found: list[Record] = []
        for record_id in ids:
            if record_id in ("", ".", ".."):
                continue
            path = f"{stream._path().rstrip('/')}/{quote(record_id, safe='')}"
            try:
                body, _ = client.request_json("GET", path)
            except UpstreamError as exc:
                if exc.status in (404, 410):
                    continue
                raise
            if isinstance(body, dict):
                found.append({"id": record_id, **body})
        return found


def mapping_from_options(options: Mapping[str, Any]) -> dict[str, str]:
    """The field mapping of a connection's ``options`` (``field_map`` over the defaults), without a kind."""
    configured = options.get("field_map") if isinstance(options.get("field_map"), dict) else {}
    return {m.name: str((configured or {}).get(m.name) or m.default) for m in FIELD_MAPPINGS}
