"""Sync under the upstream's bad days: shared timestamps, repeated records, 5xx, 429, outages, bad records."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

import apps.connectors.kinds.hubspot.streams as hubspot_streams
import apps.connectors.kinds.procore.streams as procore_streams
import apps.connectors.kinds.quickbooks.streams as qbo_streams
from apps.connectors.kinds import UnknownKind, get_kind
from apps.connectors.models import Connection, QuarantinedRecord, StreamState, SyncRun
from apps.connectors.services import SyncAlreadyRunning, sync_connection, sync_stream
from apps.entities.models import ChangeOrder, Project
from apps.simulator import Company, SimulatorServer

from .expected import expected_counts, loaded_counts
from .test_prefetch import first_page_projects
from .test_sync import sync_all, total


def test_shared_timestamps_across_page_boundaries_and_repeated_records_are_neither_lost_nor_doubled(
    connections: dict[str, Connection],
    company: Company,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tiny pages, and a third of everything edited in one instant: most pages end inside a run of equal
    # timestamps, and whole pages share one. Every page after the first also repeats the record before it.
    monkeypatch.setattr(hubspot_streams, "SEARCH_PAGE", 3)
    monkeypatch.setattr(qbo_streams, "MAX_RESULTS", 7)
    monkeypatch.setattr(procore_streams, "PER_PAGE", 7)
    simulator.hubspot_search_cap = 5  # a naive pager would need offsets far past this
    company.mutate(fraction=0.3, seed=11, now=timezone.now() - dt.timedelta(minutes=3))
    simulator.faults.add("duplicate_page", count=None)

    runs = sync_all(connections)

    assert [r.status for r in runs] == ["succeeded"] * 12, [r.error for r in runs]
    assert loaded_counts() == expected_counts(company)
    assert total(runs, "seen") > total(runs, "inserted")  # records were repeated and deduplicated
    assert total(runs, "quarantined") == 0
    assert all(r.counts["pages"] > 2 for r in runs if r.stream not in ("owners", "vendors"))
    rerun = sync_all(connections)
    assert total(rerun, "inserted") == total(rerun, "updated") == 0


def test_a_5xx_burst_and_a_429_with_retry_after_are_retried_transparently(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    simulator.faults.add("status", path_prefix="/rest/", status=503, count=2)
    simulator.faults.add("status", path_prefix="/crm/", status=500, count=1)
    simulator.faults.add("rate_limit", path_prefix="/v3/company/", retry_after=1, count=1)
    simulator.faults.add("drop_connection", path_prefix="/rest/v1.1/", count=1)
    simulator.faults.add("malformed", path_prefix="/rest/v1.0/change_order_packages", count=1)

    runs = sync_all(connections)

    assert [r.status for r in runs] == ["succeeded"] * 12
    assert loaded_counts() == expected_counts(company)
    by_stream = {r.stream: r.counts for r in runs}
    assert by_stream["customers"]["rate_limited_seconds"] == 1.0  # QBO's first call was told to wait 1 s
    assert by_stream["customers"]["retries"] == 1
    assert by_stream["owners"]["retries"] == 1
    assert by_stream["projects"]["retries"] == 2
    assert by_stream["submittals"]["retries"] == 1 and by_stream["change_orders"]["retries"] == 1
    # One call per page and retry; Procore's per-project lists make more calls than (batched) pages.
    paged = [r for r in runs if r.connection.slug != "pm"]
    assert total(paged, "api_calls") == total(paged, "pages") + total(paged, "retries")


def test_exhausted_retries_keep_committed_pages_and_the_next_run_resumes_from_the_cursor(
    connections: dict[str, Connection],
    company: Company,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(procore_streams, "PER_PAGE", 50)
    monkeypatch.setattr(procore_streams, "CONCURRENCY", 1)  # calls counted exactly, in order
    pm = connections["pm"]
    path = "/rest/v1.0/change_order_packages"  # read per project, in project id order
    read, held = first_page_projects(company, 50)
    simulator.faults.add("status", path_prefix=path, status=503, skip=read, count=None)

    partial = sync_connection(connection=pm, streams=["change_orders"])[0]

    assert partial.status == SyncRun.Status.PARTIAL
    assert "503 after 4 attempts" in partial.error and "sim-procore-token" not in partial.error
    assert partial.counts["pages"] == 1 and partial.counts["inserted"] == ChangeOrder.objects.count() == held
    assert partial.counts["api_calls"] == -(-len(company.pc_projects) // 50) + read + 4
    cursor = procore_streams.project_cursor(
        StreamState.objects.get(connection=pm, stream="change_orders").cursor
    )[1]
    finished = sorted(company.pc_projects)[:read]
    # The finished projects have their cursor; the others are remembered unread ("") and read first next.
    assert sorted((p for p, at in cursor.items() if at), key=int) == [str(p) for p in finished]
    assert set(cursor) == {str(p) for p in company.pc_projects}
    assert StreamState.objects.get(connection=pm, stream="change_orders").last_success_at is None

    simulator.faults.clear()
    simulator.requests_log.clear()
    resumed = sync_connection(connection=pm, streams=["change_orders"])[0]

    assert resumed.status == SyncRun.Status.SUCCEEDED
    assert ChangeOrder.objects.count() == len(company.pc_change_orders)
    assert resumed.counts["inserted"] == len(company.pc_change_orders) - held
    windows = {
        parse_qs(urlsplit(p).query)["project_id"][0]: parse_qs(urlsplit(p).query)["filters[updated_at]"][0]
        for _m, p in simulator.requests_log
        if p.startswith(path)
    }
    # A finished project resumes from its cursor less the lookback; the others from the beginning.
    done = str(finished[0])
    resumed_from = dt.datetime.fromisoformat(windows[done].split("...")[0])
    assert resumed_from == dt.datetime.fromisoformat(cursor[done]).replace(microsecond=0) - dt.timedelta(
        seconds=60
    )
    assert windows[str(sorted(company.pc_projects)[read])].startswith("2000-01-01T00:00:00Z...")


def test_a_connection_stops_at_the_first_stream_that_fails(
    connections: dict[str, Connection], simulator: SimulatorServer
) -> None:
    simulator.faults.add(
        "status", path_prefix="/v3/company/", regex="FROM%20Invoice|FROM\\+Invoice", status=502, count=None
    )

    runs = sync_connection(connection=connections["accounting"])

    assert [(r.stream, r.status) for r in runs] == [("customers", "succeeded"), ("invoices", "partial")]


def test_a_malformed_record_is_quarantined_and_the_run_succeeds(
    connections: dict[str, Connection], company: Company
) -> None:
    odd_co, long_name = list(company.pc_change_orders.values())[:2], next(iter(company.pc_projects.values()))
    odd_co[0].status = "on hold"
    odd_co[1].grand_total = 10**15  # beyond the 14-digit amount column
    long_name.name = "x" * 300
    company.changed()

    runs = sync_connection(connection=connections["pm"])

    assert all(r.status == SyncRun.Status.SUCCEEDED for r in runs)
    reasons = dict(QuarantinedRecord.objects.values_list("external_id", "reason"))
    assert reasons == {
        str(odd_co[0].id): "unknown change order status 'on hold'",
        str(odd_co[1].id): "amount 10000000000000.00 is out of range",
        str(long_name.id): "name is longer than 255 characters",
    }
    assert QuarantinedRecord.objects.get(external_id=str(odd_co[0].id)).payload["status"] == "on hold"
    assert ChangeOrder.objects.count() == len(company.pc_change_orders) - 2
    assert Project.objects.count() == len(company.pc_projects) - 1
    assert {r.stream: r.counts["quarantined"] for r in runs if r.counts["quarantined"]} == {
        "change_orders": 2,
        "projects": 1,
    }


def test_one_run_per_stream_at_a_time_and_a_stuck_run_is_recovered(
    connections: dict[str, Connection],
) -> None:
    crm = connections["crm"]
    now = timezone.now()
    stuck = SyncRun.objects.create(connection=crm, stream="owners", started_at=now, heartbeat_at=now)

    with pytest.raises(SyncAlreadyRunning):
        sync_stream(connection=crm, stream="owners")

    SyncRun.objects.filter(pk=stuck.pk).update(heartbeat_at=now - dt.timedelta(minutes=11))
    run = sync_stream(connection=crm, stream="owners")

    stuck.refresh_from_db()
    assert (stuck.status, run.status) == (SyncRun.Status.FAILED, SyncRun.Status.SUCCEEDED)
    assert "heartbeat" in stuck.error and stuck.finished_at


def test_a_wrong_token_fails_the_run_without_retrying(connections: dict[str, Connection]) -> None:
    crm = connections["crm"]
    crm.credentials = {"access_token": "wrong"}
    crm.save()

    run = sync_connection(connection=crm)[0]

    assert run.status == SyncRun.Status.FAILED
    assert "HTTP 401" in run.error and "wrong" not in run.error
    assert run.counts["api_calls"] == 1


def test_unknown_kinds_are_refused_clearly(db: Any) -> None:
    connection = Connection.objects.create(slug="inhouse", kind="sftp", base_url="http://127.0.0.1:9")
    with pytest.raises(UnknownKind, match="'sftp' is not available"):
        get_kind(connection)
