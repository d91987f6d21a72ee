"""HubSpot CRM: owners and companies (clients, account managers, renewal dates); notes on companies."""

from __future__ import annotations

from typing import Any, ClassVar

from django.utils import timezone

from apps.connectors.http import HttpClient, UpstreamError
from apps.connectors.kinds.base import ConnectorKind, Record, Stream

from .streams import COMPANY_PROPERTIES, NOTE_TO_COMPANY, Companies, Owners


class HubSpot(ConnectorKind):
    kind = "hubspot"
    # Owners first: companies link to them.
    stream_classes: ClassVar[list[type[Stream]]] = [Owners, Companies]
    rate_budget_default = (100, 10.0)  # a private app's burst limit per account

    def write_note(self, target: str, text: str, idempotency_key: str) -> dict[str, Any]:
        """A note on company ``target``. HubSpot has no idempotency keys: the outbox guards repeats."""
        client = self.client()
        try:
            body = {
                "properties": {"hs_note_body": text, "hs_timestamp": timezone.now().isoformat()},
                "associations": [
                    {
                        "to": {"id": target},
                        "types": [
                            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_COMPANY}
                        ],
                    }
                ],
            }
            note = client.post_json(
                "/crm/v3/objects/notes", body, headers={"Idempotency-Key": idempotency_key}
            )
        finally:
            client.close()
        return {"id": str(note.get("id", ""))}

    def fetch_records(self, client: HttpClient, stream: Stream, ids: list[str]) -> list[Record]:
        """The current companies with these ids (one read each: search lags edits); gone ones omitted."""
        if stream.name != "companies":
            raise NotImplementedError(f"hubspot cannot fetch {stream.name} by id")
        found = []
        for object_id in ids:
            try:
                found.append(
                    client.get_json(
                        f"/crm/v3/objects/companies/{object_id}",
                        params={"properties": ",".join(COMPANY_PROPERTIES)},
                    )
                )
            except UpstreamError as exc:
                if exc.status != 404:
                    raise
        return found
