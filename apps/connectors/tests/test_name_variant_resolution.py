"""The simulator's cross-system name variants, synced over loopback and resolved: the sure ones link without
a person, the close ones wait in the review queue with the right client first — real work for the demo."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.connectors.models import Connection
from apps.connectors.services import sync_connection
from apps.entities.models import Client, MatchCandidate, SourceObject
from apps.entities.resolution import entities_resolve
from apps.simulator import Company, generate_company


@pytest.fixture
def company() -> Company:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    return generate_company(seed=42, scale=0.5, now=now, name_variants=True)


def test_variants_are_auto_linked_or_queued_for_review_with_the_right_client(
    connections: dict[str, Connection], company: Company
) -> None:
    for slug in ("crm", "pm", "accounting"):
        for run in sync_connection(connection=connections[slug]):
            assert run.status == "succeeded", (slug, run.stream, run.error)
    variants = company.planted["name_variants"]
    crm, accounting = connections["crm"], connections["accounting"]
    unlinked = SourceObject.objects.filter(object_type="customer", client__isnull=True)
    assert set(unlinked.values_list("external_id", flat=True)) == {v["quickbooks_id"] for v in variants}

    result = entities_resolve(propagate=False)

    for v in variants:
        so = SourceObject.objects.get(
            connection=accounting, object_type="customer", external_id=v["quickbooks_id"]
        )
        client = Client.objects.get(source=crm, external_id=v["hubspot_id"])
        if v["expected"] == "auto_link":
            assert (so.client_id, so.match_method) == (client.pk, "fuzzy"), v
        else:
            pending = MatchCandidate.objects.filter(source_object=so, status=MatchCandidate.Status.PENDING)
            assert pending.order_by("-score").first().client_id == client.pk, v
            assert so.client_id is None
    reviews = sum(1 for v in variants if v["expected"] == "review")
    assert reviews and result.queued >= reviews
    assert result.auto_linked == sum(1 for v in variants if v["expected"] == "auto_link")
    assert result.new_entities == 0
