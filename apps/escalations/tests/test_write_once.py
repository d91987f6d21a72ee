"""Every write once, through the outbox: a CRM note whose 2xx answer is cut after the note was written.

The simulator (real HTTP over loopback) writes the note, then sends half of its answer (fault ``malformed``).
The HTTP client does not send the POST again; the outbox row fails, and its next attempt searches for the
note the lost attempt wrote before writing one. QuickBooks attachables resend their ``requestid``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.utils import timezone

from apps.connectors.models import Connection
from apps.connectors.services import connection_import
from apps.escalations.delivery import delivery_attempt, delivery_replay
from apps.escalations.models import Delivery
from apps.simulator import REALM_ID, SimulatorServer, generate_company

from .helpers import make_escalation

pytestmark = pytest.mark.django_db

NOTES = "/crm/v3/objects/notes"


@pytest.fixture
def simulator(settings) -> Iterator[SimulatorServer]:
    settings.FULCRUM = {**settings.FULCRUM, "HTTP_MAX_RETRIES": 3, "HTTP_BACKOFF_BASE": 0.01}
    with SimulatorServer(generate_company(seed=42, scale=0.05)).start() as server:
        yield server


def _connections(simulator: SimulatorServer) -> dict[str, Connection]:
    imported = connection_import(
        data=[
            {
                "slug": "crm",
                "kind": "hubspot",
                "base_url": simulator.base_url,
                "credentials": {"access_token": "sim-hubspot-token"},
            },
            {
                "slug": "accounting",
                "kind": "quickbooks",
                "base_url": simulator.base_url,
                "credentials": {"access_token": "sim-qbo-token"},
                "options": {"realm_id": REALM_ID},
            },
        ],
        actor="system:test",
    )
    return {c.slug: c for c in imported}


def _note_delivery(action: str, target: str, **extra) -> Delivery:
    now = timezone.now()
    return Delivery.objects.create(
        escalation=make_escalation(),
        action=action,
        target=target,
        idempotency_key=f"k:{action}:{target}",
        next_attempt_at=now,
        created_at=now,
        **extra,
    )


def _due_again(delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_a_hubspot_note_whose_answer_is_cut_is_written_once(simulator: SimulatorServer) -> None:
    crm = _connections(simulator)["crm"]
    company = str(next(iter(simulator.company.hs_companies)))
    delivery = _note_delivery("note_crm", f"{crm.pk}:{company}")
    simulator.faults.add("malformed", path_prefix=NOTES, method="POST", regex=f"^{NOTES}$", count=1)

    assert delivery_attempt(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert "may have taken effect" in delivery.last_error
    assert len(simulator.notes) == 1  # written, its answer lost, and not written again by the client

    _due_again(delivery)
    assert delivery_attempt(delivery.pk) == "delivered"  # the first retry searches before it writes

    delivery.refresh_from_db()
    assert delivery.response == {"id": str(simulator.notes[0]["id"]), "deduplicated": True}
    assert [(n["system"], str(n["target"])) for n in simulator.notes] == [("hubspot", company)]
    posts = [path for method, path in simulator.requests_log if method == "POST" and path == NOTES]
    assert len(posts) == 1


def test_a_replayed_note_row_searches_before_writing(simulator: SimulatorServer) -> None:
    crm = _connections(simulator)["crm"]
    company = str(next(iter(simulator.company.hs_companies)))
    delivery = _note_delivery("note_crm", f"{crm.pk}:{company}")
    simulator.faults.add("status", path_prefix=NOTES, method="POST", regex=f"^{NOTES}$", status=502, count=1)
    assert delivery_attempt(delivery.pk) == "failed"  # a 5xx: the note may exist
    Delivery.objects.filter(pk=delivery.pk).update(state="dead")

    assert delivery_replay(delivery=Delivery.objects.get(pk=delivery.pk), actor="system:test")

    assert delivery_attempt(delivery.pk) == "delivered"

    searches = [p for m, p in simulator.requests_log if m == "POST" and p == f"{NOTES}/search"]
    assert len(searches) == 1 and len(simulator.notes) == 1


def test_a_quickbooks_note_whose_answer_is_cut_is_written_once(simulator: SimulatorServer) -> None:
    accounting = _connections(simulator)["accounting"]
    job = next(c.id for c in simulator.company.qbo_customers.values() if c.is_job)
    delivery = _note_delivery("note_accounting", f"{accounting.pk}:{job}")
    simulator.faults.add("malformed", regex="/attachable", method="POST", count=1)

    assert delivery_attempt(delivery.pk) == "failed"
    _due_again(delivery)
    assert delivery_attempt(delivery.pk) == "delivered"

    assert [(n["system"], n["target"]) for n in simulator.notes] == [("quickbooks", job)]
    posts = [p for m, p in simulator.requests_log if m == "POST" and "/attachable" in p]
    assert len(posts) == 2  # sent again by the outbox with the same requestid; QuickBooks replays its answer
