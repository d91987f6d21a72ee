"""Notes written back to the CRM and the accounting system (used by escalation actions)."""

from __future__ import annotations

import pytest

from apps.connectors.kinds import get_kind
from apps.connectors.kinds.hubspot import note_token
from apps.connectors.models import Connection
from apps.simulator import Company, SimulatorServer


def test_a_hubspot_note_lands_on_the_company(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    target = next(iter(company.hs_companies))

    result = get_kind(connections["crm"]).write_note(target, "Escalated: CO 004", idempotency_key="esc-1-crm")

    assert result["id"]
    assert [(n["system"], n["target"]) for n in simulator.notes] == [("hubspot", target)]
    assert simulator.notes[0]["body"] == f"Escalated: CO 004\n\nRef: {note_token('esc-1-crm')}"


def test_a_hubspot_retry_finds_the_note_an_earlier_attempt_wrote(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    # HubSpot has no idempotency keys: an attempt whose answer was lost must not write a second note.
    target = next(iter(company.hs_companies))
    kind = get_kind(connections["crm"])

    first = kind.write_note(target, "Escalated", idempotency_key="esc-7-crm")
    again = kind.write_note(target, "Escalated", idempotency_key="esc-7-crm", retry=True)
    other = kind.write_note(target, "Escalated", idempotency_key="esc-8-crm", retry=True)

    assert again == {"id": first["id"], "deduplicated": True}
    assert other["id"] != first["id"] and "deduplicated" not in other
    assert len(simulator.notes) == 2


def test_a_quickbooks_note_is_idempotent_by_request_id(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    job = next(c.id for c in company.qbo_customers.values() if c.is_job)
    kind = get_kind(connections["accounting"])

    first = kind.write_note(job, "Margin below 12%", idempotency_key="esc-2-acct")
    again = kind.write_note(job, "Margin below 12%", idempotency_key="esc-2-acct")

    assert first == again and first["id"]
    assert [(n["system"], n["target"]) for n in simulator.notes] == [("quickbooks", job)]


def test_kinds_without_write_back_say_so(connections: dict[str, Connection]) -> None:
    with pytest.raises(NotImplementedError, match="procore connections do not support notes yet"):
        get_kind(connections["pm"]).write_note("1", "x", idempotency_key="k")
