"""HubSpot CRM: owners and companies (clients, account managers, renewal dates); notes on companies."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from django.utils import timezone

from apps.connectors.http import HttpClient, UpstreamError
from apps.connectors.kinds.base import ConnectorKind, FieldMapping, Record, Stream
from apps.connectors.webhooks.schemes import Events, Headers, Inbound, body_hash

from . import webhooks
from .streams import NOTE_TO_COMPANY, RENEWAL_DEFAULT, Companies, Owners, company_properties, search_budget


def note_token(idempotency_key: str) -> str:
    """One searchable word naming the outbox row that wrote a note."""
    return "fulcrum-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]


class HubSpot(ConnectorKind):
    kind = "hubspot"
    label = "HubSpot CRM"
    receives_webhooks = True
    signs_uri = True  # v3 signs method + decoded URI + body + timestamp
    # Owners first: companies link to them.
    stream_classes: ClassVar[list[type[Stream]]] = [Owners, Companies]
    rate_budget_default = (100, 10.0)  # a private app's burst limit per account
    field_mappings: ClassVar[tuple[FieldMapping, ...]] = (
        FieldMapping(
            "renewal_date",
            RENEWAL_DEFAULT,
            "The company property holding the contract renewal date (a custom property: its internal name, "
            "as HubSpot's property settings show it).",
        ),
    )

    @classmethod
    def check_signature(cls, inbound: Inbound, secrets: list[str]) -> None:
        webhooks.verify(inbound, secrets)

    @classmethod
    def webhook_events(cls, payload: Any, options: Mapping[str, Any], headers: Headers) -> Events:
        return webhooks.events(payload, options, headers)

    @classmethod
    def webhook_event_id(cls, headers: Headers, body: bytes, payload: Any = None) -> str:
        if isinstance(payload, list) and payload:
            return webhooks.event_id(payload)
        return body_hash(body)

    def write_note(
        self, target: str, text: str, idempotency_key: str, *, retry: bool = False
    ) -> dict[str, Any]:
        """A note on company ``target``. HubSpot has no idempotency keys, so each note carries a token
        derived from the key, and a retry first searches for a note with that token: a note written by
        an attempt whose answer was lost (timeout, 5xx after the write, worker killed) is not written twice.
        """
        token = note_token(idempotency_key)
        client = self.client()
        try:
            if retry:
                wait = search_budget(self)
                if wait is not None:
                    wait()
                found = client.post_json(
                    "/crm/v3/objects/notes/search",
                    {
                        "filterGroups": [
                            {
                                "filters": [
                                    {
                                        "propertyName": "hs_note_body",
                                        "operator": "CONTAINS_TOKEN",
                                        "value": token,
                                    }
                                ]
                            }
                        ],
                        "properties": ["hs_note_body"],
                        "sorts": [{"propertyName": "hs_createdate", "direction": "ASCENDING"}],
                        "limit": 1,
                        "after": "0",
                    },
                )
                if found.get("results"):
                    return {"id": str(found["results"][0].get("id", "")), "deduplicated": True}
            body = {
                "properties": {
                    "hs_note_body": f"{text}\n\nRef: {token}",
                    "hs_timestamp": timezone.now().isoformat(),
                },
                "associations": [
                    {
                        "to": {"id": target},
                        "types": [
                            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_COMPANY}
                        ],
                    }
                ],
            }
            # No Idempotency-Key header: HubSpot's notes API documents none (spec collection:
            # PublicApiSpecs/CRM/Notes/Rollouts/424/v3/notes.json); the token in the body, searched for on
            # retry, is what prevents a second note.
            note = client.post_json("/crm/v3/objects/notes", body)
        finally:
            client.close()
        return {"id": str(note.get("id", ""))}

    def fetch_records(
        self,
        client: HttpClient,
        stream: Stream,
        ids: Sequence[str],
        scopes: Mapping[str, str] | None = None,
    ) -> list[Record]:
        """The current companies with these ids (one read each: search lags edits); gone ones omitted."""
        if stream.name != "companies":
            raise NotImplementedError(f"hubspot cannot fetch {stream.name} by id")
        found = []
        properties = ",".join(company_properties(self))
        for object_id in ids:
            try:
                found.append(
                    client.get_json(
                        f"/crm/v3/objects/companies/{object_id}",
                        params={"properties": properties},
                    )
                )
            except UpstreamError as exc:
                if exc.status != 404:
                    raise
        return found
