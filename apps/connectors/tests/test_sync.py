"""Full and incremental sync of the three simulated systems into entities, over loopback HTTP."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.test.utils import CaptureQueriesContext

from apps.connectors.models import Connection, StreamState, SyncRun
from apps.connectors.services import sync_connection
from apps.entities.models import (
    ChangeOrder,
    Client,
    CrmOwner,
    FinancialLine,
    Milestone,
    Project,
    SourceObject,
    Submittal,
    Vendor,
)
from apps.simulator import Company

from .expected import expected_counts, loaded_counts

SLUGS = ("crm", "accounting", "pm")
MODELS = (CrmOwner, Client, SourceObject, FinancialLine, Project, Vendor, Milestone, ChangeOrder, Submittal)


def sync_all(connections: dict[str, Connection], **kwargs: Any) -> list[SyncRun]:
    runs = []
    for slug in SLUGS:
        runs += sync_connection(connection=connections[slug], **kwargs)
    return runs


def total(runs: list[SyncRun], key: str) -> int:
    return sum(r.counts[key] for r in runs)


def snapshot() -> dict[tuple[str, str], tuple[str, Any]]:
    """(model, external id) -> (content hash, synced at) of every loaded row."""
    rows = {}
    for model in MODELS:
        for external_id, content_hash, synced_at in model.objects.values_list(
            "external_id", "content_hash", "synced_at"
        ):
            rows[(model.__name__, external_id)] = (content_hash, synced_at)
    return rows


def test_full_sync_loads_exactly_what_upstream_holds(
    connections: dict[str, Connection], company: Company, rule_calls: list[Any]
) -> None:
    runs = sync_all(connections)

    assert [r.status for r in runs] == ["succeeded"] * 12
    assert loaded_counts() == expected_counts(company)
    assert total(runs, "inserted") == sum(loaded_counts().values())
    assert total(runs, "quarantined") == 0
    assert all(
        StreamState.objects.get(connection=r.connection, stream=r.stream).last_success_at for r in runs
    )
    # Values arrive normalised: money as Decimal, statuses in our words, dates as dates.
    upstream = next(iter(company.pc_projects.values()))
    project = Project.objects.get(external_id=str(upstream.id))
    assert project.contract_value == Decimal(upstream.total_value) / 100
    assert (project.number, project.accounting_ref) == (upstream.project_number, upstream.origin_id)
    assert set(ChangeOrder.objects.values_list("status", flat=True)) <= set(ChangeOrder.Status.values)
    # Procore's "Pending - ..." statuses: in review, pricing, not pricing, revised, (not) proceeding.
    waiting = {"pending", "pricing", "not_pricing", "revised", "proceeding", "not_proceeding"}
    pending = [c for c in company.pc_change_orders.values() if c.status in waiting]
    assert ChangeOrder.objects.filter(status="pending").count() == len(pending)
    critical = sum(1 for s in company.pc_submittals.values() if s.schedule_critical)
    assert Submittal.objects.filter(schedule_critical=True).count() == critical
    # The rules hear about every loaded entity, once per connection, keyed by entity name.
    heard = {key for changes, trigger in rule_calls for key in changes}
    assert heard == {
        "crm_owner",
        "client",
        "financial_line",
        "project",
        "vendor",
        "milestone",
        "change_order",
        "submittal",
    }
    assert {trigger for _changes, trigger in rule_calls} == {"sync"}


def test_links_resolve_across_the_three_systems(connections: dict[str, Connection], company: Company) -> None:
    User = get_user_model()
    owner = next(iter(company.owners.values()))
    user = User.objects.create(username="am", email=owner.email.upper())

    sync_all(connections)

    assert not Project.objects.filter(client__isnull=True).exists()
    assert not FinancialLine.objects.filter(project__isnull=True).exists()
    assert not Milestone.objects.filter(project__isnull=True).exists()
    assert not ChangeOrder.objects.filter(project__isnull=True).exists()
    assert (
        not Submittal.objects.filter(project__isnull=True).exists()
        and not Submittal.objects.filter(vendor__isnull=True).exists()
    )
    assert not Client.objects.filter(owner__isnull=True).exists()
    assert CrmOwner.objects.get(external_id=owner.id).user == user
    # Each project's client is the CRM company behind its accounting job's parent customer.
    hs_by_domain = {c.domain: c.id for c in company.hs_companies.values()}
    for project in Project.objects.select_related("client"):
        job = company.qbo_customers[project.accounting_ref]
        parent = company.qbo_customers[job.parent_id]  # type: ignore[index]
        assert project.client.external_id == hs_by_domain[parent.web.removeprefix("https://")]  # type: ignore[union-attr]
    assert set(SourceObject.objects.filter(object_type="job").values_list("match_method", flat=True)) == {
        "origin_id"
    }


def test_running_again_changes_nothing(connections: dict[str, Connection], rule_calls: list[Any]) -> None:
    sync_all(connections)
    before, calls = snapshot(), len(rule_calls)

    runs = sync_all(connections)

    assert [r.status for r in runs] == ["succeeded"] * 12
    assert total(runs, "inserted") == total(runs, "updated") == 0
    assert total(runs, "unchanged") == total(runs, "seen")
    assert snapshot() == before  # not even synced_at moved: unchanged rows are not written
    assert len(rule_calls) == calls  # nothing changed, so nothing to re-evaluate


def test_incremental_sync_after_upstream_edits_updates_exactly_the_edited_records(
    connections: dict[str, Connection], company: Company, rule_calls: list[Any]
) -> None:
    sync_all(connections)
    before = snapshot()
    loaded = sum(loaded_counts().values())
    touched = company.mutate(fraction=0.05, seed=7, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
    rule_calls.clear()

    runs = sync_all(connections)

    after = snapshot()
    changed = {key for key, (content_hash, _) in after.items() if before[key][0] != content_hash}
    assert total(runs, "inserted") == 0
    assert total(runs, "updated") == len(changed) > 0
    # Only edited records changed, and every edited record the connectors load was re-read.
    touched_ids = {str(record_id) for _system, _type, record_id in touched}
    assert {external_id.split(":")[0] for _model, external_id in changed} <= touched_ids
    assert all(after[key][1] == before[key][1] for key in after if key not in changed)
    assert total(runs, "seen") < loaded / 2  # incremental: it did not read everything again
    reported = {(key, pk) for changes, _ in rule_calls for key, ids in changes.items() for pk in ids}
    changed_entities = {model for model, _ in changed} - {"SourceObject"}
    assert {k for k, _ in reported} >= {
        {
            "Client": "client",
            "FinancialLine": "financial_line",
            "Project": "project",
            "Milestone": "milestone",
            "ChangeOrder": "change_order",
            "Submittal": "submittal",
            "Vendor": "vendor",
        }[m]
        for m in changed_entities
    }


def test_full_resync_rereads_everything_and_deletes_nothing(
    connections: dict[str, Connection], company: Company
) -> None:
    sync_all(connections)
    gone = next(iter(company.pc_change_orders))
    company.delete("procore", "change_order", gone)

    runs = sync_connection(connection=connections["pm"], full=True)

    assert all(r.full and r.status == "succeeded" for r in runs)
    assert total(runs, "seen") == sum(
        len(t)
        for t in (company.pc_projects, company.pc_vendors, company.pc_change_orders, company.pc_submittals)
    ) + sum(1 for t in company.pc_tasks.values() if t.milestone)
    assert total(runs, "unchanged") == total(runs, "seen")
    assert ChangeOrder.objects.filter(external_id=str(gone), deleted_at__isnull=True).exists()


def test_recent_edits_are_read_now_and_again_next_run(
    connections: dict[str, Connection], company: Company
) -> None:
    """The cursor never passes now − 60 s, so a record committed late with an earlier time is not missed."""
    sync_all(connections)
    touched = company.mutate(fraction=0.01, seed=3, now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
    projects = {str(rid) for system, kind, rid in touched if (system, kind) == ("procore", "project")}
    assert projects, "the mutation should touch a project for this test"

    first = sync_connection(connection=connections["pm"], streams=["projects"])[0]
    second = sync_connection(connection=connections["pm"], streams=["projects"])[0]

    cursor_at = dt.datetime.fromisoformat(StreamState.objects.get(stream="projects").cursor["updated_at"])
    assert cursor_at <= second.finished_at - dt.timedelta(seconds=60)  # type: ignore[operator]
    assert first.counts["updated"] == len(projects)
    assert second.counts["seen"] >= len(projects) and second.counts["updated"] == 0


def test_sync_pages_commit_without_waiting_for_the_wal_but_a_csv_upload_waits(
    connections: dict[str, Connection], rule_calls: list[Any]
) -> None:
    """Pages can be read again after a crash (their cursor is lost with them); an upload cannot."""
    from django.db import connection as db

    from apps.connectors.csv_import import csv_import
    from apps.connectors.services import connection_import

    from .test_csv import FILE, MAPPING

    with CaptureQueriesContext(db) as synced:
        runs = sync_connection(connection=connections["crm"])
    pages = sum(r.counts["pages"] for r in runs)
    async_commits = [q for q in synced.captured_queries if q["sql"] == "SET LOCAL synchronous_commit = off"]
    assert pages and len(async_commits) == pages

    [upload] = connection_import(data=[{"slug": "spreadsheet", "kind": "csv"}], actor="system:test")
    with CaptureQueriesContext(db) as uploaded:
        csv_import(connection=upload, data=FILE, mapping=MAPPING, actor="system:test")
    assert not [q for q in uploaded.captured_queries if "synchronous_commit" in q["sql"]]
