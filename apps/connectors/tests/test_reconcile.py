"""Deletes upstream become tombstones (id sweep, rebuild), resync from a date, schedules, schema drift."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

import apps.connectors.kinds.procore.streams as procore_streams
from apps.audit.models import AuditEntry
from apps.connectors.models import Connection, SchemaDrift, StreamState, SyncRun
from apps.connectors.operations import connection_rebuild, connection_reconcile, connection_resync_from
from apps.connectors.services import connection_import, sync_connection
from apps.entities.models import ChangeOrder, FinancialLine, Project, Vendor
from apps.simulator import Company, SimulatorServer

from .conftest import connection_file


def live_ids(model: Any, connection: Connection, **scope: Any) -> set[str]:
    return set(
        model.objects.filter(source=connection, deleted_at__isnull=True, **scope).values_list(
            "external_id", flat=True
        )
    )


def test_the_id_sweep_tombstones_exactly_the_records_deleted_upstream(
    connections: dict[str, Connection], company: Company, rule_calls: list[Any]
) -> None:
    pm, accounting = connections["pm"], connections["accounting"]
    sync_connection(connection=pm)
    sync_connection(connection=accounting)
    gone_cos = sorted(company.pc_change_orders)[:3]
    gone_invoice = sorted(company.qbo_invoices)[0]
    for co in gone_cos:
        company.delete("procore", "change_order", co)
    company.delete("quickbooks", "invoice", gone_invoice)
    incremental = sync_connection(connection=pm)
    assert all(r.status == "succeeded" for r in incremental)
    assert (
        ChangeOrder.objects.filter(deleted_at__isnull=False).count() == 0
    )  # a cursor sync cannot see deletes

    results = connection_reconcile(connection=pm) + connection_reconcile(connection=accounting)

    by_stream = {r.stream: r for r in results}
    assert by_stream["change_orders"].tombstoned == 3 and not by_stream["change_orders"].error
    assert by_stream["invoices"].tombstoned == 1
    assert sum(r.tombstoned for r in results) == 4  # estimates share the table and keep theirs
    assert live_ids(ChangeOrder, pm) == {str(i) for i in company.pc_change_orders}
    assert live_ids(FinancialLine, accounting, kind="invoice") == set(company.qbo_invoices)
    assert len(live_ids(FinancialLine, accounting, kind="estimate")) == len(company.qbo_estimates)
    assert StreamState.objects.get(connection=pm, stream="change_orders").last_reconciled_at is not None
    assert rule_calls and {int(i) for i in rule_calls[-1][0].get("financial_line", set())} == {
        FinancialLine.objects.get(source=accounting, external_id=gone_invoice).pk
    }
    # Idempotent, and a sweep run shows in the runs list without blocking the next sync.
    assert sum(r.tombstoned for r in connection_reconcile(connection=pm)) == 0
    assert SyncRun.objects.filter(connection=pm, status="running").count() == 0


def test_a_failed_listing_tombstones_nothing(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    pm = connections["pm"]
    sync_connection(connection=pm, streams=["projects", "vendors"])
    company.delete("procore", "vendor", sorted(company.pc_vendors)[0])
    simulator.faults.add("status", path_prefix="/rest/v1.0/vendors", status=503, count=None)

    [result] = connection_reconcile(connection=pm, streams=["vendors"])

    assert result.tombstoned == 0 and "503" in result.error
    assert len(live_ids(Vendor, pm)) == len(company.pc_vendors) + 1


def test_rebuild_tombstones_the_unseen_only_when_every_stream_succeeded(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    pm = connections["pm"]
    sync_connection(connection=pm)
    gone = sorted(company.pc_projects)[-1]
    company.delete("procore", "project", gone)
    simulator.faults.add("status", path_prefix="/rest/v1.1/", status=503, count=None)

    failed = connection_rebuild(connection=pm, actor="system:test")

    assert not failed.succeeded and failed.tombstoned == {}
    assert str(gone) in live_ids(Project, pm)  # nothing removed by a failed rebuild

    simulator.faults.clear()
    rebuilt = connection_rebuild(connection=pm, actor="system:test")

    assert rebuilt.succeeded, rebuilt
    assert rebuilt.tombstoned["projects"] == 1
    assert live_ids(Project, pm) == {str(i) for i in company.pc_projects}
    assert AuditEntry.objects.filter(action="connection.rebuilt").count() == 1


def test_resync_from_date_moves_cursors_back_keeps_data_and_rereads(
    connections: dict[str, Connection],
    company: Company,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: Any,
) -> None:
    pm = connections["pm"]
    sync_connection(connection=pm)
    before = Project.objects.filter(source=pm).count()
    queued: list[int] = []
    import apps.connectors.tasks as tasks

    monkeypatch.setattr(tasks.sync_connection_task, "delay", lambda pk: queued.append(pk))
    since = timezone.now() - dt.timedelta(days=400)

    with django_capture_on_commit_callbacks(execute=True):
        reset = connection_resync_from(connection=pm, since=since, actor="system:test")

    assert reset == 5 and queued == [pm.pk]
    assert Project.objects.filter(source=pm).count() == before
    cursor = StreamState.objects.get(connection=pm, stream="projects").cursor
    assert cursor["updated_at"] == since.astimezone(dt.UTC).isoformat()
    [run] = sync_connection(connection=pm, streams=["projects"])
    expected = sum(
        1
        for p in company.pc_projects.values()
        if p.updated / 1000 >= (since - dt.timedelta(seconds=60)).timestamp()
    )
    assert run.counts["seen"] == expected and run.counts["inserted"] == 0


def test_admin_resync_from_date_asks_for_the_date_then_applies(
    client: Any, administrator: Any, connections: dict[str, Connection], monkeypatch: Any
) -> None:
    import apps.connectors.tasks as tasks

    monkeypatch.setattr(tasks.sync_connection_task, "delay", lambda pk: None)
    pm = connections["pm"]
    client.force_login(administrator)
    url = reverse("admin:connectors_connection_changelist")
    base = {"action": "resync_from_date", "_selected_action": [pm.pk]}

    form = client.post(url, base)
    assert form.status_code == 200 and b'name="since"' in form.content
    future = client.post(url, {**base, "apply": "1", "since": "2999-01-01 00:00"})
    assert b"the date is in the future" in future.content
    done = client.post(url, {**base, "apply": "1", "since": "2025-01-02 03:04"}, follow=True)

    assert done.status_code == 200
    local = timezone.make_aware(dt.datetime(2025, 1, 2, 3, 4))  # the form reads the site's time zone
    cursors = {s.cursor["updated_at"] for s in StreamState.objects.filter(connection=pm)}
    assert cursors == {local.astimezone(dt.UTC).isoformat()}


def test_each_schedule_becomes_beat_entries_for_sync_and_the_id_sweep(db: None) -> None:
    items = connection_file("http://127.0.0.1:9")
    items[2]["schedule"] = "5 * * * *"
    items[2]["options"]["reconcile_schedule"] = "0 4 * * 0"
    [crm, _accounting, _pm] = connection_import(data=items, actor="system:test")

    tasks = {t.name: t for t in PeriodicTask.objects.all()}

    assert tasks["sync connection crm"].crontab.minute == "*/15"
    assert tasks["sync connection crm"].task == "apps.connectors.tasks.sync_connection_task"
    assert json.loads(tasks["sync connection crm"].args) == [crm.pk]
    assert (
        tasks["reconcile connection crm"].crontab.hour,
        tasks["reconcile connection crm"].crontab.minute,
    ) == ("3", "17")
    assert tasks["reconcile connection pm"].crontab.day_of_week == "0"
    assert "sync connection accounting" not in tasks  # no schedule, no entry

    items[0]["schedule"] = ""
    connection_import(data=items, actor="system:test")
    assert not PeriodicTask.objects.get(name="sync connection crm").enabled
    assert not PeriodicTask.objects.get(name="reconcile connection crm").enabled


def test_new_and_missing_upstream_fields_are_recorded_as_drift(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer, monkeypatch: Any
) -> None:
    import apps.simulator.procore as sim_procore

    monkeypatch.setattr(procore_streams, "PER_PAGE", 25)
    pm = connections["pm"]
    sync_connection(connection=pm, streams=["projects"])
    assert SchemaDrift.objects.count() == 0  # the first run learns the fields
    assert "total_value" in StreamState.objects.get(connection=pm, stream="projects").fields

    original = sim_procore.render_project

    def renamed(p: Any, compact: bool = False) -> dict[str, Any]:
        body = original(p, compact)
        if compact:  # the per-project streams' project list: id and names only
            return body
        body["contract_amount"] = body.pop("total_value")
        body["company"]["tier"] = "gold"
        return body

    monkeypatch.setattr(sim_procore, "render_project", renamed)
    sync_connection(connection=pm, streams=["projects"], full=True)

    [drift] = SchemaDrift.objects.all()
    assert drift.new_fields == ["company.tier", "contract_amount"]
    assert drift.missing_fields == ["total_value"]
    sync_connection(connection=pm, streams=["projects"], full=True)
    assert SchemaDrift.objects.count() == 1  # reported once, not on every page of every run


def test_a_sweep_refuses_to_tombstone_most_of_a_stream_unless_the_limit_is_raised(
    connections: dict[str, Connection], company: Company
) -> None:
    pm = connections["pm"]
    sync_connection(connection=pm, streams=["projects", "vendors", "milestones"])
    milestones = sorted(k for k, t in company.pc_tasks.items() if t.milestone)
    for task in milestones[: int(len(milestones) * 0.6)]:  # most of the stream gone: suspicious
        company.delete("procore", "task", task)

    [result] = connection_reconcile(connection=pm, streams=["milestones"])

    assert result.tombstoned == 0 and "refused" in result.error
    assert SyncRun.objects.filter(connection=pm, stream="milestones").first().status == "partial"
    pm.options = {**pm.options, "reconcile_max_fraction": 1.0}
    [forced] = connection_reconcile(connection=pm, streams=["milestones"])
    assert forced.tombstoned == int(len(milestones) * 0.6) and not forced.error


def test_the_sweep_links_around_its_tombstones_at_once(
    connections: dict[str, Connection], company: Company
) -> None:
    # A job linked to a project deleted upstream loses the link with the sweep itself: a later sync's
    # linking runs only the crosswalk statements its own writes can move (a pull with no project change
    # would not look at jobs).
    from apps.entities.models import SourceObject

    pm, accounting = connections["pm"], connections["accounting"]
    sync_connection(connection=pm)
    sync_connection(connection=accounting)
    job = SourceObject.objects.filter(object_type="job", project__isnull=False).order_by("pk").first()
    assert job is not None and job.project is not None
    company.delete("procore", "project", int(job.project.external_id))

    [result] = connection_reconcile(connection=pm, streams=["projects"])

    job.refresh_from_db()
    assert result.tombstoned == 1 and job.project is None
