"""The id sweep and Rebuild never tombstone a live record, and never tombstone most of a stream unconfirmed.

A record edited while the listing runs moves past the listing's upper bound (the pagers list up to their own
start) and is missing from it, although it is alive upstream. Each missing record is therefore asked for again
by id before it becomes a tombstone. The edits here happen for real, between two pages of the listing, on the
simulator over loopback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.messages import get_messages

import apps.connectors.kinds.hubspot.streams as hubspot_streams
from apps.audit.models import AuditEntry
from apps.connectors.models import Connection, SyncRun
from apps.connectors.operations import connection_rebuild, connection_reconcile
from apps.connectors.services import sync_connection
from apps.entities.models import Client, Milestone
from apps.simulator import Company

from .test_admin_actions import _action
from .test_reconcile import live_ids


def _edit_during_listing(monkeypatch: pytest.MonkeyPatch, company: Company, company_id: str) -> list[int]:
    """After the companies listing's first page, edit ``company_id`` upstream (as a user in HubSpot would),
    giving it a last-modified time past the listing's start. Returns the pages seen, for the test to check."""
    monkeypatch.setattr(hubspot_streams, "SEARCH_PAGE", 5)  # several pages, so the edit falls between two
    original = hubspot_streams.Companies.pages
    pages: list[int] = []

    def pages_with_an_edit(self: Any, client: Any, cursor: Any, full: bool) -> Iterator[Any]:
        for page in original(self, client, cursor, full):
            pages.append(len(page.records))
            if len(pages) == 1:
                time.sleep(1.05)  # the simulator stamps whole seconds: the edit lands after the start
                with company.lock:
                    company.hs_companies[company_id].name += " (renamed)"
                    company.hs_companies[company_id].updated = company.write_time()
                    company.changed()
            yield page

    monkeypatch.setattr(hubspot_streams.Companies, "pages", pages_with_an_edit)
    return pages


def _last_company(company: Company) -> str:
    """The company the listing reaches last (newest modification): not yet listed after the first page."""
    return max(company.hs_companies.values(), key=lambda c: (c.updated, int(c.id))).id


@pytest.fixture
def edited_while_listed(
    connections: dict[str, Connection], company: Company, monkeypatch: pytest.MonkeyPatch, rule_calls: Any
) -> tuple[Connection, str, str, list[int]]:
    """The CRM synced; then one company deleted upstream, and the one the listing reaches last edited
    between the next listing's first two pages. Returns the connection, the edited and deleted ids and
    the pages the listing read."""
    crm = connections["crm"]
    sync_connection(connection=crm)
    edited = _last_company(company)
    deleted = min(company.hs_companies)
    company.delete("hubspot", "company", deleted)
    pages = _edit_during_listing(monkeypatch, company, edited)
    return crm, edited, deleted, pages


def test_the_sweep_never_tombstones_a_record_edited_during_its_listing(
    edited_while_listed: tuple[Connection, str, str, list[int]], company: Company
) -> None:
    crm, edited, deleted, pages = edited_while_listed

    [result] = connection_reconcile(connection=crm, streams=["companies"])

    assert len(pages) > 2 and edited != deleted
    assert edited in live_ids(Client, crm)  # alive upstream, alive here
    assert (result.tombstoned, result.spared, result.error) == (1, 1, "")
    assert live_ids(Client, crm) == set(company.hs_companies)
    run = SyncRun.objects.filter(connection=crm, stream="companies", full=True).latest("started_at")
    assert run.counts["spared"] == 1 and run.counts["tombstoned"] == 1


def test_rebuild_never_tombstones_a_record_edited_during_its_listing(
    edited_while_listed: tuple[Connection, str, str, list[int]], company: Company
) -> None:
    crm, edited, _, _ = edited_while_listed

    rebuilt = connection_rebuild(connection=crm, actor="system:test")

    assert rebuilt.succeeded, [r.error for r in rebuilt.runs]
    assert rebuilt.tombstoned["companies"] == 1 and rebuilt.spared["companies"] == 1
    assert live_ids(Client, crm) == set(company.hs_companies)
    # The edit itself arrives with the next incremental sync.
    sync_connection(connection=crm)
    assert Client.objects.get(source=crm, external_id=edited).name.endswith("(renamed)")


def _delete_most_milestones(connections: dict[str, Connection], company: Company) -> tuple[Connection, int]:
    pm = connections["pm"]
    sync_connection(connection=pm)
    milestones = sorted(k for k, t in company.pc_tasks.items() if t.milestone)
    gone = milestones[: int(len(milestones) * 0.6)]
    for task in gone:
        company.delete("procore", "task", task)
    return pm, len(gone)


def test_rebuild_stops_and_reports_instead_of_tombstoning_most_of_a_stream(
    connections: dict[str, Connection], company: Company, rule_calls: Any
) -> None:
    pm, gone = _delete_most_milestones(connections, company)
    assert gone > 20
    before = Milestone.objects.filter(source=pm, deleted_at__isnull=True).count()

    refused = connection_rebuild(connection=pm, actor="system:test")

    assert not refused.succeeded and set(refused.refused) == {"milestones"}
    assert f"would tombstone {gone} of {before}" in refused.refused["milestones"]
    assert refused.tombstoned == {}
    assert Milestone.objects.filter(source=pm, deleted_at__isnull=True).count() == before
    assert AuditEntry.objects.filter(action="connection.rebuild_refused").count() == 1

    confirmed = connection_rebuild(connection=pm, actor="user:avery", confirm_mass_delete=True)

    assert confirmed.succeeded and confirmed.tombstoned["milestones"] == gone
    assert Milestone.objects.filter(source=pm, deleted_at__isnull=True).count() == before - gone


def test_the_sweep_guard_is_lifted_once_by_an_administrator(
    connections: dict[str, Connection], company: Company, rule_calls: Any
) -> None:
    pm, gone = _delete_most_milestones(connections, company)

    [refused] = connection_reconcile(connection=pm, streams=["milestones"])
    [confirmed] = connection_reconcile(connection=pm, streams=["milestones"], confirm_mass_delete=True)
    [again] = connection_reconcile(connection=pm, streams=["milestones"])

    assert refused.tombstoned == 0 and "refused above 50%" in refused.error
    assert AuditEntry.objects.filter(action="connection.tombstones_refused").count() == 1
    assert confirmed.tombstoned == gone and not confirmed.error
    assert again.tombstoned == 0 and not again.error


def test_only_administrators_may_confirm_mass_deletes_in_admin(
    client: Any,
    administrator: Any,
    ops_manager: Any,
    connections: dict[str, Connection],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    import apps.connectors.tasks as tasks

    queued: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(tasks.rebuild_connection_task, "delay", lambda *a: queued.append(("rebuild", a)))
    monkeypatch.setattr(tasks.reconcile_connection_task, "delay", lambda *a: queued.append(("sweep", a)))
    pm = connections["pm"]
    from django.contrib.auth.models import Permission

    ops_manager.user_permissions.add(*Permission.objects.filter(codename__endswith="_connection"))

    client.force_login(ops_manager)
    with django_capture_on_commit_callbacks(execute=True):
        page = _action(client, "rebuild_confirming_deletes", [pm])
    assert queued == [] and "No action selected" in " ".join(str(m) for m in get_messages(page.wsgi_request))

    client.force_login(administrator)
    with django_capture_on_commit_callbacks(execute=True):
        _action(client, "rebuild_confirming_deletes", [pm])
        _action(client, "reconcile_confirming_deletes", [pm])

    assert queued == [("rebuild", (pm.pk, "user:avery", True)), ("sweep", (pm.pk, "user:avery", True))]
    assert AuditEntry.objects.filter(action="connection.mass_delete_confirmed").count() == 2
