"""A sync worker killed with SIGKILL mid-run, then run again: the database ends equal to the upstream."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection as db_connection
from django.utils import timezone

import apps.simulator.procore as sim
from apps.connectors.kinds import get_kind
from apps.connectors.kinds.procore.streams import PROJECT_KEY
from apps.connectors.models import Connection, StreamState, SyncRun
from apps.connectors.services import _claim, connection_import
from apps.entities.loaders import content_hash
from apps.entities.models import ChangeOrder, Milestone, Project, Submittal, Vendor
from apps.rules.models import PendingEvaluation
from apps.simulator import Company, SimulatorServer

from .conftest import connection_file

ROOT = Path(settings.BASE_DIR)
PAGE_DELAY = 0.15  # seconds per change-order page: the kill lands mid-stream


def _sync_process(slug: str) -> subprocess.Popen[bytes]:
    # The configured server's URL with the test database's name: its query (the embedded server's
    # ``?host=<socket dir>``) must survive, so rebuild from the URL rather than from HOST and PORT.
    parts = urlsplit(os.environ["DATABASE_URL"])
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": urlunsplit(parts._replace(path="/" + db_connection.settings_dict["NAME"])),
        "FULCRUM_HTTP_MAX_RETRIES": "2",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "sync", slug, "-v", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


MODELS = {
    "projects": Project,
    "vendors": Vendor,
    "milestones": Milestone,
    "change_orders": ChangeOrder,
    "submittals": Submittal,
}


def _upstream(company: Company, connection: Connection) -> dict[str, dict[str, tuple[str, dt.datetime]]]:
    """Per stream: id -> (content hash of the normalised record, its upstream version), from the simulator."""
    kind = get_kind(connection)

    def listed(render: Any) -> Any:  # a project-scoped record as listed under its project
        return lambda r: {**render(r), PROJECT_KEY: str(r.project_id)}

    tables = {
        "projects": (company.pc_projects, sim.render_project),
        "vendors": (company.pc_vendors, sim.render_vendor),
        "milestones": ({k: t for k, t in company.pc_tasks.items() if t.milestone}, listed(sim.render_task)),
        "change_orders": (company.pc_change_orders, listed(sim.render_change_order)),
        "submittals": (company.pc_submittals, listed(lambda s: sim.render_submittal(s, company))),
    }
    out = {}
    for name, (table, render) in tables.items():
        stream = kind.stream(name)
        rows = [stream.normalise(render(r)) for r in table.values()]
        out[name] = {row["external_id"]: (content_hash(row), row["source_updated_at"]) for row in rows}
    return out


def _loaded(connection: Connection) -> dict[str, dict[str, tuple[str, dt.datetime]]]:
    out = {}
    for name, model in MODELS.items():
        rows = model.objects.filter(source=connection).values_list(
            "external_id", "content_hash", "source_updated_at"
        )
        loaded = {external_id: (digest, version) for external_id, digest, version in rows}
        assert len(loaded) == len(rows)  # the unique key makes duplicates impossible; checked anyway
        out[name] = loaded
    return out


def _same_content_never_newer(
    loaded: dict[str, dict[str, tuple[str, dt.datetime]]],
    upstream: dict[str, dict[str, tuple[str, dt.datetime]]],
) -> None:
    # A record whose edit changed no loaded field keeps its older version (the upsert skips unchanged
    # content), so versions are compared as "never newer than upstream", content exactly.
    for name in upstream:
        assert set(loaded[name]) == set(upstream[name]), name
        assert {k: v[0] for k, v in loaded[name].items()} == {k: v[0] for k, v in upstream[name].items()}, (
            name
        )
        assert all(loaded[name][k][1] <= upstream[name][k][1] for k in upstream[name]), name


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_sync_then_rerun_leaves_the_database_equal_to_the_upstream(
    simulator: SimulatorServer, company: Company
) -> None:
    items = connection_file(simulator.base_url)
    items[2]["options"]["per_page"] = 25
    # Every project read by every run: the rerun must reach the upstream's state now, not within a rotation.
    items[2]["options"]["project_rotation_runs"] = 1
    pm = {c.slug: c for c in connection_import(data=items, actor="system:test")}["pm"]
    simulator.faults.add(
        "delay", path_prefix="/rest/v1.0/change_order_packages", seconds=PAGE_DELAY, count=None
    )
    total_cos = len(company.pc_change_orders)

    first = _sync_process("pm")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        loaded = ChangeOrder.objects.filter(source=pm).count()
        if loaded >= 50:
            break
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    assert 0 < ChangeOrder.objects.filter(source=pm).count() < total_cos  # really killed mid-stream
    [stuck] = SyncRun.objects.filter(connection=pm, status="running")
    assert stuck.stream == "change_orders"
    cursor_at_kill = StreamState.objects.get(connection=pm, stream="change_orders").cursor
    assert cursor_at_kill  # committed with the pages before the kill

    # Upstream moves on meanwhile: edits (some of them to records already loaded) and a new cursor window.
    company.mutate(fraction=0.05, seed=3, now=timezone.now() - dt.timedelta(minutes=2))
    simulator.faults.clear()
    second = _sync_process("pm")
    _out, err = second.communicate(timeout=300)

    assert second.returncode == 0, err.decode()[-2000:]
    stuck.refresh_from_db()
    assert stuck.status == "failed" and "is gone" in stuck.error
    _same_content_never_newer(_loaded(pm), _upstream(company, pm))  # nothing lost, doubled or stale
    latest = SyncRun.objects.filter(connection=pm, stream="change_orders").order_by("-started_at").first()
    assert latest is not None and latest.status == "succeeded"
    assert latest.counts["seen"] < total_cos  # resumed from the committed cursor, not from scratch
    # What the killed run stored was never linked nor marked; the rerun published it with its own.
    stored = set(ChangeOrder.objects.filter(source=pm).values_list("pk", flat=True))
    marked = PendingEvaluation.objects.filter(subject_type="change_order", subject_id__in=stored)
    assert marked.count() == len(stored)
    assert not SyncRun.objects.filter(connection=pm, published_at__isnull=True).exists()


def test_a_run_without_heartbeat_from_another_host_is_expired_by_the_next_claim(
    connections: dict[str, Connection],
) -> None:
    pm = connections["pm"]
    old = timezone.now() - dt.timedelta(minutes=11)
    lost = SyncRun.objects.create(
        connection=pm, stream="projects", started_at=old, heartbeat_at=old, worker="other-host:123"
    )
    alive = SyncRun.objects.create(
        connection=pm, stream="vendors", started_at=old, heartbeat_at=timezone.now(), worker="other-host:124"
    )

    run = _claim(pm, "projects", False)

    lost.refresh_from_db()
    assert lost.status == "failed" and "no heartbeat" in lost.error and run.status == "running"
    from apps.connectors.services import SyncAlreadyRunning

    with pytest.raises(SyncAlreadyRunning):  # a live worker elsewhere still blocks a second run
        _claim(pm, "vendors", False)
    alive.refresh_from_db()
    assert alive.status == "running"
