"""QuickBooks Online: customers and jobs (the crosswalk), invoices, bills, purchases, estimates; notes."""

from __future__ import annotations

from typing import Any, ClassVar

from apps.connectors.http import HttpClient
from apps.connectors.kinds.base import ConnectorKind, Record, Stream

from .streams import MINOR_VERSION, Bills, Customers, Estimates, Invoices, Purchases, QueryStream


class QuickBooks(ConnectorKind):
    kind = "quickbooks"
    stream_classes: ClassVar[list[type[Stream]]] = [Customers, Invoices, Bills, Purchases, Estimates]
    token_url = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"  # noqa: S105
    rate_budget_default = (500, 60.0)  # per realm per minute

    def tenant(self) -> str:
        return f"{super().tenant()}/{self.realm}"

    @property
    def realm(self) -> str:
        return str(self.option("realm_id"))

    def write_note(
        self, target: str, text: str, idempotency_key: str, *, retry: bool = False
    ) -> dict[str, Any]:
        """An Attachable note on customer/job ``target``; QBO replays its answer for a repeated requestid."""
        client = self.client()
        body = {"Note": text, "AttachableRef": [{"EntityRef": {"type": "Customer", "value": target}}]}
        try:
            answer = client.request(
                "POST",
                f"/v3/company/{self.realm}/attachable",
                params={"requestid": idempotency_key[:50]},
                json=body,
            ).json()
        finally:
            client.close()
        return {"id": str((answer.get("Attachable") or {}).get("Id", ""))}

    def fetch_records(self, client: HttpClient, stream: Stream, ids: list[str]) -> list[Record]:
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
