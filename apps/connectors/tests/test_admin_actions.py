"""Connection admin actions over loopback: test connection, resync from date, rebuild."""

from __future__ import annotations

from typing import Any

from django.contrib.messages import get_messages
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.connectors.models import Connection
from apps.simulator import SimulatorServer

from .test_rest import rest_connection


def _action(client: Any, action: str, connections: list[Connection], **extra: Any) -> Any:
    return client.post(
        reverse("admin:connectors_connection_changelist"),
        {"action": action, "_selected_action": [c.pk for c in connections], **extra},
        follow=True,
    )


def test_test_connection_reports_first_page_counts_and_errors(
    client: Any, administrator: Any, simulator: SimulatorServer, fast_http: None
) -> None:
    good = rest_connection(simulator, "page", slug="good")
    bad = rest_connection(simulator, "page", slug="bad")
    bad.credentials = {"access_token": "wrong"}
    bad.save()
    client.force_login(administrator)

    response = _action(client, "test_connection", [good, bad])

    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert (
        "good: projects: 7 record(s) on the first page; change_orders: 7 record(s) on the first page" in shown
    )
    [error] = [m for m in shown if m.startswith("bad:")]
    assert "HTTP 401" in error and "wrong" not in error
    assert AuditEntry.objects.filter(action="connection.tested").count() == 2


def test_connector_admin_pages_load_for_staff(
    client: Any, ops_manager: Any, administrator: Any, simulator: SimulatorServer, fast_http: None
) -> None:
    from apps.connectors.models import SchemaDrift
    from apps.connectors.services import connection_import, sync_connection

    connection = rest_connection(simulator, "page")
    sync_connection(connection=connection, streams=["projects"])
    SchemaDrift.objects.create(connection=connection, stream="projects", new_fields=["x"], missing_fields=[])
    [upload] = connection_import(data=[{"slug": "sheet", "kind": "csv"}], actor="system:test")
    for user in (ops_manager, administrator):
        client.force_login(user)
        for name in ("schemadrift", "syncrun", "quarantinedrecord", "connection"):
            page = client.get(reverse(f"admin:connectors_{name}_changelist"))
            assert page.status_code == 200, (user, name)
        assert b"projects" in client.get(reverse("admin:connectors_schemadrift_changelist")).content
        for obj in (connection, upload):
            page = client.get(reverse("admin:connectors_connection_change", args=[obj.pk]))
            assert page.status_code == 200, (user, obj)


def test_rebuild_and_reconcile_actions_queue_their_tasks_after_commit(
    client: Any,
    administrator: Any,
    simulator: SimulatorServer,
    fast_http: None,
    monkeypatch: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    import apps.connectors.tasks as tasks

    queued: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(tasks.rebuild_connection_task, "delay", lambda *a: queued.append(("rebuild", a)))
    monkeypatch.setattr(tasks.reconcile_connection_task, "delay", lambda *a: queued.append(("reconcile", a)))
    connection = rest_connection(simulator, "page")
    client.force_login(administrator)

    with django_capture_on_commit_callbacks(execute=True):
        _action(client, "rebuild", [connection])
        _action(client, "reconcile_now", [connection])

    assert queued == [("rebuild", (connection.pk, "user:avery")), ("reconcile", (connection.pk,))]
    assert AuditEntry.objects.filter(action="connection.rebuild_requested").count() == 1


def test_the_reconcile_and_rebuild_tasks_run_their_services(
    db: None, simulator: SimulatorServer, fast_http: None
) -> None:
    from apps.connectors.tasks import rebuild_connection_task, reconcile_connection_task
    from apps.entities.models import Project

    connection = rest_connection(simulator, "cursor")
    rebuilt = rebuild_connection_task(connection.pk)
    assert rebuilt.startswith("inhouse succeeded") and "'projects': 0" in rebuilt
    simulator.company.delete("procore", "project", sorted(simulator.company.pc_projects)[0])

    swept = reconcile_connection_task(connection.pk)

    assert "projects listed=" in swept and "tombstoned=1" in swept
    assert Project.objects.filter(source=connection, deleted_at__isnull=False).count() == 1


def test_the_run_list_shows_live_progress_and_reloads_while_a_run_is_under_way(
    client: Any, administrator: Any
) -> None:
    import datetime as dt

    from django.utils import timezone

    from apps.connectors.models import SyncRun

    connection = Connection.objects.create(slug="crm-live", kind="hubspot", base_url="http://127.0.0.1:9")
    now = timezone.now()
    counts = {"pages": 3, "seen": 600, "inserted": 550, "updated": 40, "quarantined": 2}
    run = SyncRun.objects.create(
        connection=connection, stream="companies", started_at=now, heartbeat_at=now - dt.timedelta(seconds=4),
        counts={**counts, "rate_limited_seconds": 12.4},
    )  # fmt: skip
    client.force_login(administrator)

    page = client.get(reverse("admin:connectors_syncrun_changelist")).content.decode()
    assert "3 pages · 600 seen · 550 inserted · 40 updated · 2 quarantined · 12 s rate-limited" in page
    SyncRun.objects.filter(pk=run.pk).update(counts={**counts, "pages": 1})
    assert "1 page · 600 seen" in client.get(reverse("admin:connectors_syncrun_changelist")).content.decode()
    assert "4 s ago" in page or "5 s ago" in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert '<td class="field-published"><img src="/static/admin/img/icon-unknown.svg" alt="None">' in page

    SyncRun.objects.filter(pk=run.pk).update(status="success", finished_at=now)
    page = client.get(reverse("admin:connectors_syncrun_changelist")).content.decode()
    assert 'http-equiv="refresh"' not in page
    assert f"finished {timezone.localtime(now):%H:%M:%S}" in page
    assert '<td class="field-published"><img src="/static/admin/img/icon-no.svg" alt="False">' in page
    changelist = reverse("admin:connectors_syncrun_changelist")
    assert client.get(changelist + "?linked=no").context["cl"].result_count == 1
    assert client.get(changelist + "?linked=yes").context["cl"].result_count == 0
    SyncRun.objects.filter(pk=run.pk).update(published_at=now)
    page = client.get(changelist).content.decode()
    assert '<td class="field-published"><img src="/static/admin/img/icon-yes.svg" alt="True">' in page
    assert client.get(changelist + "?linked=no").context["cl"].result_count == 0
    assert client.get(changelist + "?linked=yes").context["cl"].result_count == 1
