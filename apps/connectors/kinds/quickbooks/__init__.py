"""QuickBooks Online: customers and jobs (the crosswalk), invoices, bills, purchases, estimates; notes."""

from __future__ import annotations

from typing import Any, ClassVar

from apps.connectors.kinds.base import ConnectorKind, Stream

from .streams import Bills, Customers, Estimates, Invoices, Purchases


class QuickBooks(ConnectorKind):
    kind = "quickbooks"
    stream_classes: ClassVar[list[type[Stream]]] = [Customers, Invoices, Bills, Purchases, Estimates]

    @property
    def realm(self) -> str:
        return str(self.option("realm_id"))

    def write_note(self, target: str, text: str, idempotency_key: str) -> dict[str, Any]:
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
