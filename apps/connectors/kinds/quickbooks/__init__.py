"""QuickBooks Online: customers and jobs (the crosswalk), invoices, bills, purchases, estimates; notes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from apps.connectors.http import HttpClient
from apps.connectors.kinds.base import ConnectorKind, FieldMapping, Record, Stream
from apps.connectors.webhooks.schemes import Events, Headers, Inbound

from . import webhooks
from .streams import MINOR_VERSION, Bills, Customers, Estimates, Invoices, Purchases, QueryStream

if TYPE_CHECKING:
    from apps.connectors.models import WebhookDelivery

# Intuit's requestid: "a maximum of 50 characters for all operations except batch", unique per company;
# a repeated one gets the first answer replayed instead of a second create
# (https://blogs.intuit.com/2015/04/06/15346/ "Request ID update for QuickBooks Online integration").
REQUEST_ID_MAX = 50


def request_id(idempotency_key: str) -> str:
    """The requestid for an outbox key: the key itself when it fits, else a UUID derived from it (never a
    truncation: two long keys sharing a prefix would replay one note for the other)."""
    if len(idempotency_key) <= REQUEST_ID_MAX:
        return idempotency_key
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fulcrum:{idempotency_key}"))


class QuickBooks(ConnectorKind):
    kind = "quickbooks"
    label = "QuickBooks Online"
    receives_webhooks = True
    keeps_malformed = True
    stream_classes: ClassVar[list[type[Stream]]] = [Customers, Invoices, Bills, Purchases, Estimates]
    # How jobs are told from customers. Today's rule is the defaults: a Customer with Job=true, its parent
    # in ParentRef (https://developer.intuit.com/app/developer/qbo/docs/api/accounting/all-entities/customer).
    field_mappings: ClassVar[tuple[FieldMapping, ...]] = (
        FieldMapping("job_flag", "Job", "Customer field that is true for a job (sub-customer)"),
        FieldMapping("job_parent", "ParentRef", "Customer reference field naming a job's parent customer"),
        FieldMapping(
            "job_customer_type",
            "",
            "CustomerTypeRef value or name that also marks a customer as a job (empty: the flag alone)",
        ),
    )
    token_url = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"  # noqa: S105
    rate_budget_default = (500, 60.0)  # per realm per minute

    @classmethod
    def check_signature(cls, inbound: Inbound, secrets: list[str]) -> None:
        webhooks.verify(inbound, secrets)

    @classmethod
    def webhook_events(cls, payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
        return webhooks.events(payload, options, headers)

    @classmethod
    def webhook_split(cls, headers: Headers, body: bytes, payload: Any) -> list[tuple[str, bytes]]:
        return webhooks.split(payload, body)

    def after_webhook(self, delivery: WebhookDelivery) -> None:
        from .catchup import after_delivery  # catchup reads the inbox model: loaded once apps are ready

        after_delivery(delivery)

    def tenant(self) -> str:
        return f"{super().tenant()}/{self.realm}"

    @property
    def realm(self) -> str:
        return str(self.option("realm_id"))

    def write_note(
        self, target: str, text: str, idempotency_key: str, *, retry: bool = False
    ) -> dict[str, Any]:
        """An Attachable note on customer/job ``target``
        (https://developer.intuit.com/app/developer/qbo/docs/api/accounting/all-entities/attachable);
        QBO replays its first answer for a repeated ``requestid``, so a retry never creates a second one."""
        client = self.client()
        body = {"Note": text, "AttachableRef": [{"EntityRef": {"type": "Customer", "value": target}}]}
        try:
            answer = client.request(
                "POST",
                f"/v3/company/{self.realm}/attachable",
                params={"requestid": request_id(idempotency_key), "minorversion": MINOR_VERSION},
                json=body,
            ).json()
        finally:
            client.close()
        return {"id": str((answer.get("Attachable") or {}).get("Id", ""))}

    def fetch_records(
        self,
        client: HttpClient,
        stream: Stream,
        ids: Sequence[str],
        scopes: Mapping[str, str] | None = None,
    ) -> list[Record]:
        """The current documents with these ids (``Id IN (...)``, unexploded); gone ones omitted."""
        assert isinstance(stream, QueryStream)
        found: list[Record] = []
        # QBO ids are digits: nothing else reaches the query text.
        wanted = sorted({str(i) for i in ids if str(i).isdigit()})
        for start in range(0, len(wanted), 100):
            listed = ", ".join(f"'{i}'" for i in wanted[start : start + 100])
            query = f"SELECT * FROM {stream.entity_name} WHERE Id IN ({listed}) MAXRESULTS 1000"  # noqa: S608
            data = client.get_json(
                f"/v3/company/{self.realm}/query", params={"query": query, "minorversion": MINOR_VERSION}
            )
            found += (data.get("QueryResponse") or {}).get(stream.entity_name) or []
        return found
