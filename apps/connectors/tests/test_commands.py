"""The management commands and the Celery task: exit codes, messages, YAML in and out."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from apps.connectors.models import Connection
from apps.connectors.tasks import sync_connection_task
from apps.simulator import Company, SimulatorServer

from .conftest import connection_file


def test_import_then_export_connections(db: None, tmp_path: Path, simulator: SimulatorServer) -> None:
    path = tmp_path / "connections.yaml"
    path.write_text(yaml.safe_dump(connection_file(simulator.base_url)))
    out = io.StringIO()

    call_command("import_connections", str(path), stdout=out)
    call_command("export_connections", stdout=(exported := io.StringIO()))

    assert out.getvalue().splitlines()[0] == f"crm (hubspot) {simulator.base_url}"
    data = yaml.safe_load(exported.getvalue())
    assert [c["slug"] for c in data] == ["accounting", "crm", "pm"]
    assert "sim-" not in exported.getvalue() and "hs-secret" not in exported.getvalue()


def test_import_reports_a_bad_file(db: None, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- {slug: x, kind: sap, base_url: 'http://x.example'}\n")
    with pytest.raises(CommandError, match="kind 'sap' is not one of"):
        call_command("import_connections", str(path))


def test_sync_command_exit_codes(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer, rule_calls: list[object]
) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("sync", "pm", stdout=out, stderr=err)
    assert out.getvalue().startswith("pm succeeded: projects succeeded seen=")
    assert "pm/change_orders" in err.getvalue()  # the progress bar

    with pytest.raises(CommandError) as unknown:
        call_command("sync", "nope")
    assert unknown.value.returncode == 2 and "no connection 'nope' (known: accounting, crm, pm)" in str(
        unknown.value
    )

    with pytest.raises(CommandError) as no_stream:
        call_command("sync", "pm", "--stream", "invoices")
    assert no_stream.value.returncode == 2 and "procore has no stream 'invoices'" in str(no_stream.value)

    simulator.faults.add("status", path_prefix="/crm/v3/objects/companies", status=503, count=None)
    with pytest.raises(CommandError) as down:
        call_command("sync", "crm", "--full", stderr=io.StringIO())
    assert down.value.returncode == 1
    message = str(down.value)
    assert message.startswith("crm partial: owners succeeded seen=12 +12") and "companies partial" in message
    assert "HTTP 503 after 4 attempts" in message and "\n" not in message


def test_the_celery_task_returns_a_short_status(
    connections: dict[str, Connection], rule_calls: list[object]
) -> None:
    status = sync_connection_task.run(connections["crm"].pk)
    assert status.startswith("crm succeeded: owners succeeded seen=12 +12")

    Connection.objects.filter(slug="crm").update(enabled=False)
    assert sync_connection_task.run(connections["crm"].pk) == "crm: disabled, skipped"
    assert sync_connection_task.run(10**9) == f"connection {10**9} no longer exists"
