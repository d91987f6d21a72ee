"""A document-AI tool in Azure AI Document Intelligence's shape (the ``docai`` kind's upstream).

The company's document pipeline keeps one analysis per document it processed: an analyze operation as Azure's
"Get Analyze Result" answers it (``status``, ``createdDateTime``, ``lastUpdatedDateTime``, ``analyzeResult``
with ``modelId``, ``apiVersion`` and ``documents[]`` of ``docType``, ``confidence`` and typed ``fields``),
with the tool's own document ``id``. Served at

- ``GET /docai/documents?updatedSince=&top=&skip=`` → ``{"value": [...], "nextLink": <url> | absent}``
  (Azure's paged-list convention), oldest change first;
- ``GET /docai/documents/{id}`` → one analysis (404 when unknown);

with Azure's key header ``Ocp-Apim-Subscription-Key: sim-docai-key``. :func:`document_deliveries` builds the
Standard-Webhooks-signed pushes ``{"type": "document.analyzed", "data": {"id", "analyzeResult"}}``; the
control endpoint ``POST /_sim/docai/push {"url", "secret"}`` sends them.

The documents are derived from the generated company, so they name its real Procore projects and change
orders. ``PLANTED_DOCUMENTS`` are the cases the demo's document rules must tell apart (see ``expected``):
an extracted amount that differs from Procore's change order by more than 10% on a low-margin project
(escalates), near-misses (a 9% and an exactly-10% difference, a high-margin project), a low-confidence
invoice (routed to a person), one just above the confidence threshold, and a document that names nothing.
"""

from __future__ import annotations

import datetime as dt
import re
import weakref
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from .common import Request, Response, json_response
from .records import Company
from .state import SimState

API_KEY = "sim-docai-key"
API_VERSION = "2024-11-30"
INVOICE_MODEL = "prebuilt-invoice"
CO_MODEL = "fulcrum-change-order-request"  # a custom extraction model of the tenant
ROUTE = re.compile(r"/docai/documents(?:/([^/]+))?")
MAX_PAGE = 100
# The demo's thresholds: a document below this confidence goes to a person; a delta above this escalates.
LOW_CONFIDENCE = 0.8
DELTA_PCT = 10


@dataclass(frozen=True)
class PlantedDocument:
    """One planted document: which change order (by planted project name) or none it concerns."""

    key: str
    project: str  # a PLANTED project's name; "" names nothing Fulcrum knows
    kind: str  # "change_order_request" | "invoice"
    amount: str  # the amount the tool extracted
    confidence: float
    outcome: str  # "escalate" | "near_miss" | "low_confidence" | "unlinked"
    reason: str
    co_amount: str = ""  # the planted change order of ``project`` the request is about (its Procore amount)


# fmt: off
PLANTED_DOCUMENTS: tuple[PlantedDocument, ...] = (
    PlantedDocument("co-delta-ironwood", "Ironwood Civic Center", "change_order_request", "58880.00", 0.97,
                    "escalate", "extracted 58,880.00 vs Procore 51,200.00 (+15.0%); margin 9.0%", "51200.00"),
    PlantedDocument("co-delta-summit", "Summit Peak Lodge Renovation", "change_order_request", "49000.00",
                    0.93, "escalate", "extracted 49,000.00 vs Procore 55,000.00 (-10.9%); margin 3.2%",
                    "55000.00"),
    PlantedDocument("co-delta-9pct", "Harborview Parking Structure", "change_order_request", "129056.00",
                    0.95, "near_miss", "a 9.0% difference (not more than 10%)", "118400.00"),
    PlantedDocument("co-delta-10pct", "Cobalt Ridge High School Gymnasium", "change_order_request",
                    "96800.00", 0.94, "near_miss", "exactly 10.0% (not more than 10%)", "88000.00"),
    PlantedDocument("co-delta-high-margin", "Pinecrest Memory Care Wing", "change_order_request", "160000.00",
                    0.96, "near_miss", "+23.1% on a 12.3% margin project (not low-margin)", "130000.00"),
    PlantedDocument("invoice-low-confidence", "Northgate Cold Storage Facility", "invoice", "18250.00", 0.62,
                    "low_confidence", "classified with confidence 0.62 (below 0.8): a person checks it"),
    PlantedDocument("invoice-confidence-081", "Redwood Valley Bottling Line", "invoice", "9400.00", 0.81,
                    "near_miss", "confidence 0.81, just above 0.8"),
    PlantedDocument("invoice-unmatched", "", "invoice", "12780.00", 0.9,
                    "unlinked", "names a vendor, customer and purchase order no system knows"),
)
# fmt: on
UNMATCHED = {"vendor": "Quartz Harbor Supply", "customer": "Tidewater Aquarium Trust", "po": "PRJ-99999"}


def _field_string(value: str, confidence: float) -> dict[str, Any]:
    return {"type": "string", "valueString": value, "content": value, "confidence": confidence}


def _field_currency(amount: str, confidence: float) -> dict[str, Any]:
    value = Decimal(amount)
    return {
        "type": "currency",
        "valueCurrency": {"currencySymbol": "$", "amount": float(value), "currencyCode": "USD"},
        "content": f"${value:,.2f}",
        "confidence": confidence,
    }


def _field_date(day: dt.date, confidence: float) -> dict[str, Any]:
    return {
        "type": "date",
        "valueDate": day.isoformat(),
        "content": day.isoformat(),
        "confidence": confidence,
    }


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _operation(doc_id: str, result: dict[str, Any], created: dt.datetime) -> dict[str, Any]:
    return {
        "id": doc_id,
        "status": "succeeded",
        "createdDateTime": _iso(created),
        "lastUpdatedDateTime": _iso(created + dt.timedelta(seconds=3)),
        "analyzeResult": result,
    }


def analyze_result(
    *,
    kind: str,
    amount: str,
    confidence: float,
    vendor: str,
    customer: str,
    project_ref: str,
    day: dt.date,
    change_order_ref: str = "",
    invoice_id: str = "",
) -> dict[str, Any]:
    """An ``analyzeResult`` as Azure returns it: the prebuilt invoice model for invoices, the tenant's custom
    extraction model (same field names plus ``ChangeOrderNumber``) for change-order requests."""
    fields: dict[str, Any] = {
        "VendorName": _field_string(vendor, round(min(0.99, confidence + 0.02), 3)),
        "CustomerName": _field_string(customer, round(min(0.99, confidence + 0.01), 3)),
        "PurchaseOrder": _field_string(project_ref, round(min(0.99, confidence + 0.01), 3)),
        "InvoiceDate": _field_date(day, 0.98),
        "InvoiceTotal": _field_currency(amount, round(max(0.0, confidence - 0.01), 3)),
    }
    if invoice_id:
        fields["InvoiceId"] = _field_string(invoice_id, 0.97)
    if change_order_ref:
        fields["ChangeOrderNumber"] = _field_string(change_order_ref, 0.96)
    model = INVOICE_MODEL if kind == "invoice" else CO_MODEL
    return {
        "apiVersion": API_VERSION,
        "modelId": model,
        "stringIndexType": "textElements",
        "content": f"{vendor}\n{customer}\n{project_ref}\n{amount}",
        "pages": [],
        "documents": [
            {"docType": kind, "boundingRegions": [], "fields": fields, "confidence": confidence, "spans": []}
        ],
    }


# An analysis, once made, is what the tool read off the document: later edits of the change order it names
# do not change it. Made on the company's first request, then kept for the company's life.
_ANALYSES: weakref.WeakKeyDictionary[Company, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


def documents(company: Company) -> list[dict[str, Any]]:
    """Every analysis the tool holds, oldest first: the planted ones, then a few ordinary ones."""
    with company.lock:
        if company not in _ANALYSES:
            _ANALYSES[company] = _analyse(company)
        return _ANALYSES[company]


def _analyse(company: Company) -> list[dict[str, Any]]:
    projects = {p.name: p for p in company.pc_projects.values()}
    vendors = sorted(company.pc_vendors.values(), key=lambda v: v.id)
    by_project: dict[int, list[Any]] = {}
    for co in company.pc_change_orders.values():
        by_project.setdefault(co.project_id, []).append(co)
    client_of = {
        p["name"]: client["name"]
        for client in company.planted.get("clients", [])
        for p in client.get("projects", [])
    }
    out = []
    start = company.now - dt.timedelta(days=5)
    for index, planted in enumerate(PLANTED_DOCUMENTS):
        created = start + dt.timedelta(hours=index)
        vendor = vendors[index % len(vendors)].name if vendors else "Sub Co"
        if not planted.project:
            result = analyze_result(
                kind=planted.kind, amount=planted.amount, confidence=planted.confidence,
                vendor=UNMATCHED["vendor"], customer=UNMATCHED["customer"], project_ref=UNMATCHED["po"],
                day=company.today - dt.timedelta(days=3), invoice_id="INV-77001",
            )  # fmt: skip
            out.append(_operation(planted.key, result, created))
            continue
        project = projects[planted.project]
        co_number = ""
        if planted.co_amount:
            cents = int(Decimal(planted.co_amount) * 100)
            # "" if the change order was edited before the tool first read the document.
            co_number = next((co.number for co in by_project[project.id] if co.grand_total == cents), "")
        result = analyze_result(
            kind=planted.kind, amount=planted.amount, confidence=planted.confidence, vendor=vendor,
            customer=client_of.get(planted.project, ""), project_ref=project.project_number,
            day=company.today - dt.timedelta(days=4), change_order_ref=co_number,
        )  # fmt: skip
        out.append(_operation(planted.key, result, created))
    # Ordinary requests: healthy projects' change orders, read back within 4% and with confidence.
    healthy = sorted(pid for pid in company.healthy_projects if pid in by_project)[:6]
    for n, pid in enumerate(healthy):
        co = sorted(by_project[pid], key=lambda c: c.id)[0]
        amount = Decimal(co.grand_total) / 100 * (Decimal(100 + n % 5) / 100)
        result = analyze_result(
            kind="change_order_request", amount=f"{amount:.2f}", confidence=0.9 + n / 100,
            vendor=vendors[n % len(vendors)].name if vendors else "Sub Co", customer="",
            project_ref=company.pc_projects[pid].project_number, day=company.today - dt.timedelta(days=2),
            change_order_ref=co.number,
        )  # fmt: skip
        out.append(_operation(f"co-request-{co.id}", result, start + dt.timedelta(hours=20 + n)))
    return out


def expected(company: Company) -> dict[str, list[str]]:
    """The tool's document ids by planted outcome (what the demo's rules should do with each)."""
    found: dict[str, list[str]] = {}
    for planted in PLANTED_DOCUMENTS:
        found.setdefault(planted.outcome, []).append(planted.key)
    return found


def _authorized(req: Request) -> bool:
    return (req.header("ocp-apim-subscription-key") or "") == API_KEY


def handle(state: SimState, req: Request) -> Response | None:
    if not req.path.startswith("/docai/"):
        return None
    if not _authorized(req):
        # Azure's answer to a missing or wrong key.
        return json_response(
            401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}
        )
    match = ROUTE.fullmatch(req.path.rstrip("/"))
    if match is None or req.method != "GET":
        return json_response(404, {"error": {"code": "NotFound", "message": f"no resource {req.path}"}})
    with state.company.lock:
        items = documents(state.company)
    if match.group(1) is not None:
        for item in items:
            if item["id"] == match.group(1):
                return json_response(200, {k: v for k, v in item.items() if k != "id"})
        return json_response(404, {"error": {"code": "NotFound", "message": "no such analysis"}})
    try:
        since = req.q("updatedSince") or ""
        top = min(MAX_PAGE, int(req.q("top") or MAX_PAGE))
        skip = int(req.q("skip") or 0)
    except ValueError as exc:
        return json_response(400, {"error": {"code": "InvalidArgument", "message": str(exc)}})
    if since:
        cut = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        items = [
            i
            for i in items
            if dt.datetime.fromisoformat(i["lastUpdatedDateTime"].replace("Z", "+00:00")) >= cut
        ]
    items.sort(key=lambda i: (i["lastUpdatedDateTime"], i["id"]))
    page = items[skip : skip + top]
    body: dict[str, Any] = {"value": page}
    if skip + top < len(items):
        query = {"top": top, "skip": skip + top, **({"updatedSince": since} if since else {})}
        body["nextLink"] = f"{req.base_url}/docai/documents?{urlencode(query)}"
    return json_response(200, body)


def document_deliveries(company: Company, secret: str) -> list[tuple[dict[str, str], bytes]]:
    """One signed ``document.analyzed`` delivery per document the tool holds."""
    from .webhooks import standard_delivery

    return [
        standard_delivery(
            secret,
            "document.analyzed",
            {"id": item["id"], "analyzeResult": item["analyzeResult"]},
            msg_id=f"msg_docai_{item['id']}",
        )
        for item in documents(company)
    ]


def push(company: Company, url: str, secret: str) -> list[int]:
    """POST every document to ``url`` (a Fulcrum webhook endpoint); the status of each answer."""
    from .webhooks import send

    return [send(url, headers, body)[0] for headers, body in document_deliveries(company, secret)]
