"""Azure AI Document Intelligence contract: the documented ``analyzeResult`` shapes (``contracts/docai/``)
hold the ``docai`` kind and the simulator's document tool.

- The examples (prebuilt-invoice, a custom classifier) conform to the schema and are read by the connector
  into the document fields SPEC names, with the prebuilt invoice model's default field mapping.
- Everything the simulator's tool serves (list items, one item, signed pushes) conforms to the same schema,
  so the simulator cannot drift from the vendor's shape unnoticed.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
import requests

from apps.connectors.kinds.docai import FIELD_MAPPINGS, document_record, mapping_from_options
from apps.simulator import SimulatorServer, generate_company
from apps.simulator.docai import API_KEY, document_deliveries, documents
from apps.simulator.webhooks import new_standard_secret

from . import assert_conforms, example, load

VENDOR = "docai"
OPERATION = "analyze-operation.schema.json"


def as_operation(analyze_result: dict[str, Any]) -> dict[str, Any]:
    """A pushed analyzeResult inside the AnalyzeOperation envelope the schema describes."""
    return {
        "status": "succeeded",
        "createdDateTime": "2024-11-18T09:12:04Z",
        "lastUpdatedDateTime": "2024-11-18T09:12:07Z",
        "analyzeResult": analyze_result,
    }


def test_every_file_names_its_doc_page() -> None:
    for name in (OPERATION, "webhook-event.schema.json"):
        assert "https://" in load(VENDOR, name)["$comment"]
    for name in ("invoice.example.json", "classifier.example.json"):
        assert "https://learn.microsoft.com/" in load(VENDOR, name)["_source"]


@pytest.mark.parametrize("name", ["invoice.example.json", "classifier.example.json"])
def test_the_examples_conform_to_the_schema(name: str) -> None:
    assert_conforms(VENDOR, OPERATION, example(VENDOR, name))


def test_the_schema_refuses_what_the_vendor_would_not_send() -> None:
    bad = example(VENDOR, "invoice.example.json")
    bad["analyzeResult"]["documents"][0]["confidence"] = 1.5
    with pytest.raises(AssertionError, match="confidence"):
        assert_conforms(VENDOR, OPERATION, bad)
    bad = example(VENDOR, "invoice.example.json")
    bad["analyzeResult"]["documents"][0]["fields"]["InvoiceTotal"]["type"] = "money"
    with pytest.raises(AssertionError, match="type"):
        assert_conforms(VENDOR, OPERATION, bad)


def test_the_prebuilt_invoice_example_is_read_with_the_default_mapping() -> None:
    defaults = {m.name: m.default for m in FIELD_MAPPINGS}
    assert defaults["amount"] == "InvoiceTotal" and defaults["vendor_name"] == "VendorName"
    assert defaults["client_name"] == "CustomerName" and defaults["project_ref"] == "PurchaseOrder"
    assert defaults["invoice_ref"] == "InvoiceId" and defaults["document_date"] == "InvoiceDate"

    record = document_record({"id": "doc-1", **example(VENDOR, "invoice.example.json")}, defaults)

    assert record["external_id"] == "doc-1"
    assert record["label"] == "invoice" and record["confidence"] == 1
    assert record["model_id"] == "prebuilt-invoice" and record["model_version"] == "2024-11-30"
    assert record["amount"] == Decimal("110.00") and record["currency"] == "USD"
    assert record["amount_confidence"] == pytest.approx(0.96)
    assert record["vendor_name"] == "CONTOSO LTD." and record["client_name"] == "Microsoft Corp"
    assert record["project_ref"] == "P-10471" and record["invoice_ref"] == "INV-100"
    assert record["document_date"] == dt.date(2019, 11, 15)
    assert record["source_updated_at"] == dt.datetime(2024, 11, 18, 9, 12, 7, tzinfo=dt.UTC)
    assert record["extracted"]["CustomerName"] == {"value": "Microsoft Corp", "confidence": 0.93}


def test_a_custom_classifier_result_gives_a_label_and_confidence_only() -> None:
    record = document_record(
        {"id": 7, **example(VENDOR, "classifier.example.json")}, mapping_from_options({})
    )

    assert record["label"] == "submittal_package" and record["confidence"] == pytest.approx(0.874)
    assert record["model_id"] == "construction-doc-classifier"
    assert record["amount"] is None and record["extracted"] == {} and record["project_ref"] == ""


def test_what_the_simulator_serves_conforms() -> None:
    company = generate_company(seed=42, scale=0.1, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    with SimulatorServer(company).start() as sim:
        headers = {"Ocp-Apim-Subscription-Key": API_KEY}
        listed = requests.get(
            f"{sim.base_url}/docai/documents", params={"top": 5}, headers=headers, timeout=5
        )
        assert listed.status_code == 200
        page = listed.json()
        assert len(page["value"]) == 5 and page["nextLink"].startswith(sim.base_url)
        for item in page["value"]:
            assert_conforms(VENDOR, OPERATION, {k: v for k, v in item.items() if k != "id"})
        one = requests.get(
            f"{sim.base_url}/docai/documents/{page['value'][0]['id']}", headers=headers, timeout=5
        )
        assert_conforms(VENDOR, OPERATION, one.json())
        denied = requests.get(f"{sim.base_url}/docai/documents", timeout=5)
        assert denied.status_code == 401
    for _headers, body in document_deliveries(company, new_standard_secret(seed=1)):
        event = json.loads(body)
        assert_conforms(VENDOR, "webhook-event.schema.json", event)
        assert_conforms(VENDOR, OPERATION, as_operation(event["data"]["analyzeResult"]))
    assert len(documents(company)) >= 8
