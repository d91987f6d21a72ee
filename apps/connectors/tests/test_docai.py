"""The ``docai`` kind end to end against the simulator's document tool over loopback HTTP: analyses pulled
from its results endpoint and pushed as Standard-Webhooks-signed deliveries become ``document`` entities,
linked by reference numbers (then names) to what Procore and QuickBooks hold; bad deliveries are refused
with the SPEC's answers and kept for forensics."""

from __future__ import annotations

import copy
import time
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client as HttpClient
from rapidfuzz import fuzz

from apps.connectors.models import Connection, QuarantinedRecord, WebhookDelivery
from apps.connectors.services import connection_import, sync_connection
from apps.connectors.webhooks.processing import process_delivery
from apps.entities.documents import documents_resolve, unlinked
from apps.entities.models import ChangeOrder, Document, DocumentCandidate, ResolutionSettings
from apps.entities.resolution import normalise_name
from apps.simulator import Company, SimulatorServer
from apps.simulator.docai import API_KEY, document_deliveries, documents
from apps.simulator.webhooks import new_standard_secret, standard_delivery

SECRET = new_standard_secret(seed=21)
Status = WebhookDelivery.Status


def docai_connection(base_url: str, **options: Any) -> dict[str, Any]:
    return {
        "slug": "docs",
        "kind": "docai",
        "base_url": base_url,
        "credentials": {"api_key": API_KEY},
        "webhook_secret": SECRET,
        "options": {"results_path": "/docai/documents", "settle_seconds": 0, **options},
    }


@pytest.fixture
def synced(connections: dict[str, Connection], simulator: SimulatorServer) -> dict[str, Connection]:
    """The three systems synced, and a docai connection to the simulator's document tool."""
    for slug in ("crm", "accounting", "pm"):
        sync_connection(connection=connections[slug])
    [docs] = connection_import(data=[docai_connection(simulator.base_url)], actor="system:test")
    return {**connections, "docs": docs}


def post(client: HttpClient, headers: dict[str, str], body: bytes) -> Any:
    headers = dict(headers)
    content_type = headers.pop("Content-Type", "application/json")
    return client.post("/webhooks/docs/", data=body, content_type=content_type, headers=headers)


def test_pulled_analyses_become_documents_linked_by_reference(
    synced: dict[str, Connection], company: Company
) -> None:
    [run] = sync_connection(connection=synced["docs"])

    assert run.status == "succeeded", run.error
    assert Document.objects.count() == len(documents(company))
    doc = Document.objects.select_related("project", "change_order", "client").get(
        external_id="co-delta-ironwood"
    )
    assert doc.label == "change_order_request" and doc.confidence == pytest.approx(0.97)
    assert doc.model_id == "fulcrum-change-order-request" and doc.model_version == "2024-11-30"
    assert doc.amount == Decimal("58880.00") and doc.currency == "USD"
    assert doc.extracted["InvoiceTotal"]["confidence"] == pytest.approx(0.96)
    assert doc.project is not None and doc.project.name == "Ironwood Civic Center"
    assert doc.change_order is not None and doc.change_order.amount == Decimal("51200.00")
    assert doc.client is not None and doc.client.name == "Ironwood Civic Center Authority"
    assert doc.link_method == Document.LinkMethod.REFERENCE
    # The document naming nothing any system knows stays unlinked (listed in admin).
    assert list(unlinked().values_list("external_id", flat=True)) == ["invoice-unmatched"]


def test_an_incremental_pull_reads_only_what_changed(synced: dict[str, Connection]) -> None:
    sync_connection(connection=synced["docs"])
    [again] = sync_connection(connection=synced["docs"])

    assert again.status == "succeeded"
    assert again.counts["inserted"] == 0 and again.counts["updated"] == 0


def test_the_field_mapping_is_per_connection(
    synced: dict[str, Connection], simulator: SimulatorServer
) -> None:
    docs = synced["docs"]
    docs.options = {**docs.options, "field_map": {"amount": "NoSuchField", "project_ref": "CustomerName"}}
    docs.save(update_fields=["options"])

    sync_connection(connection=docs)

    doc = Document.objects.get(external_id="co-delta-ironwood")
    assert doc.amount is None
    assert doc.project_ref == "Ironwood Civic Center Authority"
    assert doc.change_order_id is None  # nothing names the project now, so no change order either


def test_a_signed_push_is_stored_processed_and_linked(
    synced: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    deliveries = document_deliveries(company, SECRET)
    for headers, body in deliveries:
        response = post(client, headers, body)
        assert response.status_code == 202, response.content
        outcome = process_delivery(int(response.json()["id"]))
        assert outcome.status == "processed", outcome.error

    assert Document.objects.count() == len(deliveries)
    doc = Document.objects.get(external_id="co-delta-summit")
    assert doc.change_order is not None and doc.change_order.amount == Decimal("55000.00")
    # A duplicate delivery changes nothing.
    headers, body = deliveries[0]
    assert post(client, headers, body).json()["status"] == "duplicate"


def test_document_deleted_tombstones_the_document(
    synced: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    sync_connection(connection=synced["docs"])
    headers, body = standard_delivery(SECRET, "document.deleted", {"id": "co-delta-9pct"})

    response = post(client, headers, body)
    assert response.status_code == 202
    assert process_delivery(int(response.json()["id"])).status == "processed"

    assert Document.objects.get(external_id="co-delta-9pct").deleted_at is not None


def test_a_bad_signature_is_401_and_kept(
    synced: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    headers, body = document_deliveries(company, new_standard_secret(seed=99))[0]

    response = post(client, headers, body)

    assert response.status_code == 401 and response.json()["error"]
    row = WebhookDelivery.objects.get()
    assert row.status == Status.REJECTED and not row.signature_valid and bytes(row.body) == body
    assert process_delivery(row.pk).status == "skipped"
    assert not Document.objects.exists()


def test_a_stale_timestamp_is_401_and_kept(
    synced: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    item = documents(company)[0]
    data = {"id": item["id"], "analyzeResult": item["analyzeResult"]}
    headers, body = standard_delivery(SECRET, "document.analyzed", data, timestamp=int(time.time()) - 3600)

    response = post(client, headers, body)

    assert response.status_code == 401 and "timestamp" in response.json()["error"]
    assert WebhookDelivery.objects.get().status == Status.REJECTED
    assert not Document.objects.exists()


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (lambda r: r.pop("modelId"), "modelId"),
        (lambda r: r.update(documents="invoice"), "documents must be a list"),
        (lambda r: r["documents"][0].update(confidence=1.7), "between 0 and 1"),
        (lambda r: r["documents"][0]["fields"]["InvoiceTotal"].update(valueCurrency={"x": 1}), "amount"),
        (lambda r: r["documents"][0]["fields"]["InvoiceDate"].update(valueDate="15/11/2019"), "not a date"),
    ],
)
def test_a_malformed_analysis_is_400_with_a_json_error_and_kept(
    synced: dict[str, Connection], company: Company, client: HttpClient, spoil: Any, said: str
) -> None:
    item = copy.deepcopy(documents(company)[0])
    spoil(item["analyzeResult"])
    headers, body = standard_delivery(
        SECRET, "document.analyzed", {"id": item["id"], "analyzeResult": item["analyzeResult"]}
    )

    response = post(client, headers, body)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json" and said in response.json()["error"]
    row = WebhookDelivery.objects.get()
    assert row.status == Status.REJECTED and row.signature_valid and bytes(row.body) == body
    assert not Document.objects.exists()


def test_an_unknown_event_type_is_recorded_as_ignored(
    synced: dict[str, Connection], client: HttpClient
) -> None:
    headers, body = standard_delivery(SECRET, "document.classified", {"id": "x-1"})

    response = post(client, headers, body)

    assert response.status_code == 202
    outcome = process_delivery(int(response.json()["id"]))
    assert outcome.status == "processed"
    row = WebhookDelivery.objects.get()
    assert row.status == Status.PROCESSED
    assert row.summary["ignored"] == 1, row.summary
    assert not Document.objects.exists()


def test_a_failed_analysis_in_a_pull_is_quarantined_not_loaded(
    synced: dict[str, Connection], simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.simulator import docai

    real = docai.documents

    def with_failed(company: Company) -> list[dict[str, Any]]:
        items = real(company)
        items[1] = {**items[1], "status": "failed"}
        return items

    monkeypatch.setattr(docai, "documents", with_failed)
    [run] = sync_connection(connection=synced["docs"])

    assert run.status == "succeeded"
    assert QuarantinedRecord.objects.filter(reason__contains="failed").count() == 1
    assert not Document.objects.filter(external_id="co-delta-summit").exists()


def test_names_link_above_the_threshold_and_queue_between(synced: dict[str, Connection]) -> None:
    sync_connection(connection=synced["docs"])
    unmatched = Document.objects.get(external_id="invoice-unmatched")
    target = (
        ChangeOrder.objects.select_related("project__client").filter(project__client__isnull=False).first()
    )
    assert target is not None
    name = target.project.client.name
    # A name scoring between the thresholds waits for a person.
    settings = ResolutionSettings.current()
    variant = name
    while (
        fuzz.token_sort_ratio(normalise_name(variant), normalise_name(name)) >= settings.auto_link_threshold
    ):
        variant = variant[:-1]
    assert fuzz.token_sort_ratio(normalise_name(variant), normalise_name(name)) >= settings.review_threshold
    Document.objects.filter(pk=unmatched.pk).update(client_name=variant)

    result = documents_resolve()

    assert result.queued >= 1
    candidate = DocumentCandidate.objects.get(document=unmatched, client=target.project.client)
    assert candidate.status == DocumentCandidate.Status.PENDING
    Document.objects.filter(pk=unmatched.pk).update(client_name=f"{name}, Inc.")
    documents_resolve()
    assert Document.objects.get(pk=unmatched.pk).client_id == target.project.client_id


def test_a_csv_upload_loads_documents_that_link_like_the_tools(synced: dict[str, Connection]) -> None:
    from apps.connectors.csv_import import csv_import
    from apps.connectors.kinds.csv import CsvMapping

    target = ChangeOrder.objects.filter(project__isnull=False).select_related("project").order_by("id")[0]
    assert target is not None
    [upload] = connection_import(data=[{"slug": "scans", "kind": "csv"}], actor="system:test")
    data = (
        "Doc,Class,Score,Total,PO,CO\n"
        f"s-1,change_order_request,0.91,{target.amount + 1},{target.project.number},{target.number}\n"
        "s-2,invoice,0.55,10,,\n"
    ).encode()
    mapping = CsvMapping(
        entity="document",
        id_column="Doc",
        columns={
            "Class": "label",
            "Score": "confidence",
            "Total": "amount",
            "PO": "project_ref",
            "CO": "change_order_ref",
        },
    )

    run = csv_import(connection=upload, data=data, mapping=mapping, actor="system:test")

    assert run.status == "succeeded", run.error
    assert list(QuarantinedRecord.objects.values_list("reason", flat=True)) == []
    doc = Document.objects.get(source=upload, external_id="s-1")
    assert doc.label == "change_order_request" and doc.confidence == pytest.approx(0.91)
    assert doc.change_order_id == target.pk and doc.project_id == target.project_id
    assert unlinked().filter(source=upload, external_id="s-2", confidence=0.55).exists()


def test_the_demo_rules_escalate_exactly_the_planted_documents(
    synced: dict[str, Connection], company: Company, client: HttpClient
) -> None:
    from apps.accounts.demo import DEMO_RULES
    from apps.escalations.models import Escalation
    from apps.orchestration.pipeline import evaluate_subjects
    from apps.rules.evaluation.services import rules_import
    from apps.simulator.docai import PLANTED_DOCUMENTS

    rules_import(text=DEMO_RULES.read_text(), actor="system:test")
    for headers, body in document_deliveries(company, SECRET):
        assert process_delivery(int(post(client, headers, body).json()["id"])).status == "processed"

    evaluate_subjects(subject_type="document")

    opened = {
        (Document.objects.get(pk=e.subject_id).external_id, e.rule.key, e.route)
        for e in Escalation.objects.filter(subject_type="document").select_related("rule")
    }
    wanted = {d.key for d in PLANTED_DOCUMENTS if d.outcome == "escalate"}
    assert opened == {(key, "doc-co-amount-exec-review", "executive") for key in wanted} | {
        ("invoice-low-confidence", "doc-low-confidence", "standard")
    }
