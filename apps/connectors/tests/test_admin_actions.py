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
