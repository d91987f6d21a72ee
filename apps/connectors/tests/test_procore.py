"""Procore specifics: the status mapping, whole-window reads, X-Rate-Limit pacing, per-project cursors and
webhooks in every payload format, against the simulator over loopback where a server is needed."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client as DjangoClient

import apps.connectors.kinds.procore.streams as procore_streams
from apps.connectors.http import HttpClient, UpstreamError
from apps.connectors.kinds.base import BadRecord
from apps.connectors.kinds.procore import RESET_MARGIN, Procore, paging, rate_limit_pause
from apps.connectors.kinds.procore.streams import CO_STATUS_MAP, normalise_co_status, returned_date
from apps.connectors.models import Connection, StreamState, WebhookDelivery
from apps.connectors.services import sync_connection, sync_stream
from apps.connectors.webhooks.processing import process_delivery
from apps.entities.models import ChangeOrder, Milestone, Project, Submittal
from apps.errors import Transient
from apps.simulator import Company, SimulatorServer
from apps.simulator.webhooks import change_record, event_for, procore_delivery

from .contracts import load

PROCORE_AUTH = "Bearer procore-hook-credential"


# ---- statuses -------------------------------------------------------------------------------------------


def test_every_documented_change_order_status_maps_to_a_spec_status() -> None:
    documented = load("procore", "change_order_package.schema.json")["properties"]["status"]["enum"]
    assert sorted(CO_STATUS_MAP) == sorted(documented)
    mapped = {status: normalise_co_status(status) for status in documented}
    assert set(mapped.values()) == {"draft", "pending", "approved", "rejected", "void"}
    pending = ["pending", "revised", "pricing", "not_pricing", "proceeding", "not_proceeding"]
    assert [mapped[s] for s in pending] == ["pending"] * 6 and mapped["no_charge"] == "approved"


@pytest.mark.parametrize("status", ["Pending - In Review", "maybe", "", None])
def test_a_status_outside_the_enum_is_refused(status: Any) -> None:
    with pytest.raises(BadRecord, match="unknown change order status"):
        normalise_co_status(status)


def test_returned_only_when_every_required_approver_returned() -> None:
    architect = {"response_required": True, "returned_date": "2026-05-04"}
    engineer = {"response_required": True, "returned_date": None}
    submitter = {"response_required": False, "returned_date": None}
    assert returned_date([submitter, architect, engineer]) is None
    engineer["returned_date"] = "2026-04-30"
    assert str(returned_date([submitter, architect, engineer])) == "2026-05-04"
    assert str(returned_date([{"returned_date": "2026-01-02"}])) == "2026-01-02"  # none marked: all
    assert returned_date([]) is None and returned_date(None) is None


# ---- whole windows ---------------------------------------------------------------------------------------


class FakeResponse:
    def __init__(self, body: list[dict[str, Any]], total: int, more: bool) -> None:
        self.body = body
        self.headers = {"Total": str(total), **({"Link": '<x?page=2>; rel="next"'} if more else {})}


class FakeClient:
    """Answers pages from ``passes``: a list of passes, each a list of (records, Total)."""

    def __init__(self, passes: list[list[tuple[list[dict[str, Any]], int]]]) -> None:
        self.answers = [
            FakeResponse(records, total, index < len(one) - 1)
            for one in passes
            for index, (records, total) in enumerate(one)
        ]
        self.calls: list[dict[str, Any]] = []

    def request_json(self, method: str, path: str, params: dict[str, Any]) -> tuple[Any, FakeResponse]:
        self.calls.append(params)
        answer = self.answers.pop(0)
        return answer.body, answer


def test_a_window_that_shrank_while_paged_is_read_again() -> None:
    # Record 2 was edited between the pages: Total fell from 3 to 2, and record 3 moved onto page 1.
    unstable = [([{"id": 1}, {"id": 2}], 3), ([], 2)]
    stable = [([{"id": 1}, {"id": 3}], 2)]
    client = FakeClient([unstable, stable])

    pages = list(paging.read_all(client, "/rest/v1.0/vendors", {}, 2))  # type: ignore[arg-type]

    assert [r["id"] for page in pages for r in page] == [1, 2, 1, 3]
    assert [c["page"] for c in client.calls] == [1, 2, 1]


def test_a_window_that_never_settles_ends_the_run_partial() -> None:
    moving = [([{"id": 1}], 3), ([{"id": 2}], 2)]
    client = FakeClient([moving] * paging.MAX_PASSES)
    with pytest.raises(UpstreamError, match="changed during each") as caught:
        list(paging.read_all(client, "/rest/v1.0/vendors", {}, 1))  # type: ignore[arg-type]
    assert isinstance(caught.value, Transient)


# ---- rate limits -----------------------------------------------------------------------------------------


def _response(**headers: str) -> requests.Response:
    response = requests.Response()
    response.headers.update(headers)
    return response


def test_pause_only_when_the_reported_limit_is_spent() -> None:
    now = 1_466_182_200.0
    spent = _response(**{"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "1466182244"})
    assert rate_limit_pause(spent, now) == pytest.approx(44.0 + RESET_MARGIN)
    left = _response(**{"X-Rate-Limit-Remaining": "589", "X-Rate-Limit-Reset": "1466182244"})
    assert rate_limit_pause(left, now) is None
    assert rate_limit_pause(_response(), now) is None


def test_the_pause_ends_just_after_the_reset_by_a_clock_that_agrees_with_procores() -> None:
    # Our clock reads within the second Procore's Date header names: resume a quarter second past the reset
    # (developers.procore.com/documentation/rate-limiting: "pause requests until after X-Rate-Limit-Reset").
    now = 1_466_182_243.4
    spent = _response(
        **{
            "X-Rate-Limit-Remaining": "0",
            "X-Rate-Limit-Reset": "1466182244",
            "Date": "Fri, 17 Jun 2016 16:50:43 GMT",  # 1466182243
        }
    )
    assert rate_limit_pause(spent, now) == pytest.approx(0.6 + RESET_MARGIN)
    assert RESET_MARGIN < 0.5


def test_a_clock_that_disagrees_with_procores_date_header_is_not_trusted() -> None:
    # "Measure from the response's Date header, not your server's clock, so clock drift can't skew the
    # result" (developers.procore.com/documentation/content/rate-limit-handling): 30 s fast or slow, the
    # pause runs from the Date header's second, so it never ends before Procore's reset.
    headers = {
        "X-Rate-Limit-Remaining": "0",
        "X-Rate-Limit-Reset": "1466182246",
        "Date": "Fri, 17 Jun 2016 16:50:43 GMT",  # 1466182243
    }
    for drift in (30.0, -30.0):
        paused = rate_limit_pause(_response(**headers), 1_466_182_243.5 + drift)
        assert paused == pytest.approx(3 + RESET_MARGIN)
    unreadable = {**headers, "Date": "yesterday"}
    assert rate_limit_pause(_response(**unreadable), 1_466_182_243.5) == pytest.approx(2.5 + RESET_MARGIN)


class Budget:
    def __init__(self) -> None:
        self.held: list[float] = []

    def __call__(self) -> float:
        return 0.0

    def hold(self, seconds: float) -> None:
        self.held.append(seconds)


def test_the_client_waits_out_a_spent_limit_and_holds_the_shared_budget(monkeypatch: Any) -> None:
    slept: list[float] = []
    budget = Budget()
    client = HttpClient("http://upstream.test/", sleep=slept.append, budget=budget)
    client.pace = lambda response: 3.0 if response.headers.get("X-Rate-Limit-Remaining") == "0" else None
    answers = iter([_response(**{"X-Rate-Limit-Remaining": "0"}), _response(), _response()])

    def send(*args: Any, **kwargs: Any) -> requests.Response:
        response = next(answers)
        response.status_code, response._content = 200, b"[]"
        return response

    monkeypatch.setattr(client.session, "request", send)
    client.get_json("/rest/v1.0/vendors")
    assert budget.held == [3.0] and slept == []
    client.get_json("/rest/v1.0/vendors")
    assert len(slept) == 1 and 2.5 < slept[0] <= 3.0
    assert client.stats.rate_limited_seconds == pytest.approx(slept[0])


def test_a_limit_resetting_later_than_we_wait_ends_the_run_partial(monkeypatch: Any) -> None:
    client = HttpClient("http://upstream.test/", sleep=lambda s: None, max_retry_after=60)
    client.pace = lambda response: 1800.0

    def send(*args: Any, **kwargs: Any) -> requests.Response:
        response = _response()
        response.status_code, response._content = 200, b"[]"
        return response

    monkeypatch.setattr(client.session, "request", send)
    client.get_json("/rest/v1.0/vendors")
    with pytest.raises(UpstreamError, match="resets in") as caught:
        client.get_json("/rest/v1.0/vendors")
    assert isinstance(caught.value, Transient) and client.stats.api_calls == 1


def test_sync_pauses_at_the_simulators_limit_until_its_reset(
    connections: dict[str, Connection], simulator: SimulatorServer, monkeypatch: Any
) -> None:
    monkeypatch.setattr(procore_streams, "PER_PAGE", 2)
    simulator.state.procore_rate = (3, 2.0)  # 3 calls per 2-second window
    simulator.state.procore_calls.clear()
    # The windows are fixed, as Procore's hourly one (numbered from the epoch): calls straddling a window's
    # end are counted in two windows and need no pause (seen once: 2 + 3 calls, 10 ms apart). Start the
    # sync at the beginning of a window, so its first four calls fall in one.
    time.sleep(2.0 - time.time() % 2.0 + 0.01)
    started = time.monotonic()

    run = sync_stream(connection=connections["pm"], stream="vendors")

    assert run.status == "succeeded", run.error
    assert run.counts["api_calls"] >= 5 and run.counts["rate_limited_seconds"] > 0
    # Paced by the headers: the simulator refuses a fourth call in a window with a 429, so none came
    # before a reset, and each pause ended at most a margin past it.
    assert run.counts["retries"] == 0
    pauses = -(-run.counts["api_calls"] // 3) - 1
    assert time.monotonic() - started < pauses * 2.0 + 2.0


# ---- per-project cursors and schedule status --------------------------------------------------------------


def test_incremental_reads_each_project_from_its_own_cursor(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    pm = connections["pm"]
    pm.options = {**pm.options, "project_rotation_runs": 1}  # every project, every run
    pm.save()
    sync_connection(connection=pm)
    state = StreamState.objects.get(connection=pm, stream="change_orders")
    assert set(procore_streams.project_cursor(state.cursor)[1]) == {str(p) for p in company.pc_projects}
    assert "projects_at" in state.cursor and "projects" not in state.cursor  # packed, not the map
    assert not Project.objects.exclude(schedule_status="").exists()  # Procore reports none; none refused
    target = sorted(company.pc_change_orders)[3]
    change_record(company, "procore", "change_order", target, status="not_proceeding")
    simulator.requests_log.clear()

    [run] = sync_connection(connection=pm, streams=["change_orders"])

    assert run.counts["seen"] == 1 and ChangeOrder.objects.get(external_id=str(target)).status == "pending"
    windows = [p for _m, p in simulator.requests_log if p.startswith("/rest/v1.0/change_order_packages")]
    assert len(windows) == len(company.pc_projects)  # one read per project, none from the beginning
    assert all("filters%5Bupdated_at%5D=2000-" not in p for p in windows)


def _windows(simulator: SimulatorServer) -> list[str]:
    """The project ids whose change order window was asked for, in order."""
    return [
        parse_qs(urlsplit(path).query)["project_id"][0]
        for _method, path in simulator.requests_log
        if path.startswith("/rest/v1.0/change_order_packages")
    ]


def _rotating(pm: Connection, runs: int) -> Connection:
    pm.options = {**pm.options, "project_rotation_runs": runs}
    pm.save()
    sync_connection(connection=pm)  # the first run reads every project
    return pm


def test_incremental_reads_edited_projects_and_a_rotating_share_only(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    pm = _rotating(connections["pm"], 3)
    projects = sorted(company.pc_projects)
    edited = projects[-1]  # last by id: never in the first share
    change_record(company, "procore", "project", edited, name="Renamed Upstream")
    simulator.requests_log.clear()

    [run] = sync_connection(connection=pm, streams=["change_orders"])

    share = math.ceil(len(projects) / 3)
    assert run.status == "succeeded", run.error
    assert sorted(_windows(simulator), key=int) == sorted({*map(str, projects[:share]), str(edited)}, key=int)
    listed = [p for _m, p in simulator.requests_log if p.startswith("/rest/v1.0/projects?")]
    assert len(listed) == 1 and "filters%5Bupdated_at%5D" in listed[0]  # only the edited projects listed


@pytest.mark.parametrize(
    ("schedule", "runs"),
    [("*/15 * * * *", 96), ("0 * * * *", 24), ("0 */8 * * *", 3), ("30 9 * * 1-5", 1), ("", 24), ("bad", 24)],
)
def test_the_rotation_reads_every_project_once_a_day_of_the_schedule(schedule: str, runs: int) -> None:
    # Procore retries a failing hook for 24 hours (webhooks.md): a day of scheduled runs shares the
    # projects out, whatever the schedule; no schedule (manual runs only): 24 runs, as before.
    assert procore_streams.runs_per_day(schedule) == (runs if schedule not in ("", "bad") else 0)
    connection = Connection(slug="pm", kind="procore", schedule=schedule, options={"company_id": 1})
    assert procore_streams.rotation_runs(Procore(connection)) == runs
    connection.options = {"company_id": 1, "project_rotation_runs": 5}  # the option still wins
    assert procore_streams.rotation_runs(Procore(connection)) == 5


def test_an_incremental_run_reads_its_share_of_a_day_by_the_schedule(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    pm = connections["pm"]
    pm.schedule = "0 */8 * * *"  # three runs a day, no project_rotation_runs: a third of the projects a run
    pm.save()
    sync_connection(connection=pm)
    simulator.requests_log.clear()

    [run] = sync_connection(connection=pm, streams=["change_orders"])

    projects = sorted(company.pc_projects)
    assert run.status == "succeeded", run.error
    assert sorted(_windows(simulator), key=int) == [str(p) for p in projects[: math.ceil(len(projects) / 3)]]


def _not_void_in(company: Company, project_id: int) -> int:
    """A change order of the project that is not void upstream yet (the generated statuses vary with the
    company's clock: the last one of the project was already void at some hours, and voiding it changed
    nothing)."""
    return max(
        c.id for c in company.pc_change_orders.values() if c.project_id == project_id and c.status != "void"
    )


def test_a_change_without_webhook_or_project_edit_is_read_within_the_rotation(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    pm = _rotating(connections["pm"], 3)
    last_project = max(company.pc_projects)
    target = _not_void_in(company, last_project)
    change_record(company, "procore", "change_order", target, status="void")
    seen_in: list[int] = []

    for number in (1, 2, 3):
        simulator.requests_log.clear()
        sync_connection(connection=pm, streams=["change_orders"])
        if ChangeOrder.objects.get(external_id=str(target)).status == "void":
            seen_in.append(number)
            break

    assert seen_in == [3]  # the project read least recently comes round by the third run, not later
    assert str(last_project) in _windows(simulator)


def test_the_changes_and_the_share_are_read_apart(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    # The scheduled task reads the changes (edited and new projects), then the share as its own task: the
    # same projects as one run reading both, in two runs.
    pm = _rotating(connections["pm"], 3)
    projects = sorted(company.pc_projects)
    edited = projects[-1]
    change_record(company, "procore", "project", edited, name="Renamed Upstream")
    simulator.requests_log.clear()

    [changes] = sync_connection(connection=pm, streams=["change_orders"], reads="changes")

    assert changes.status == "succeeded", changes.error
    assert _windows(simulator) == [str(edited)]
    state = StreamState.objects.get(connection=pm, stream="change_orders")
    listed, fresh = state.cursor["listed"], state.last_success_at
    simulator.requests_log.clear()

    runs = sync_connection(connection=pm, reads="share")

    assert [r.stream for r in runs] == ["milestones", "change_orders", "submittals"]  # the project lists
    assert all(r.status == "succeeded" for r in runs), [r.error for r in runs]
    share_size = math.ceil(len(projects) / 3)
    assert sorted(_windows(simulator), key=int) == [str(p) for p in projects[:share_size]]
    assert not [p for _m, p in simulator.requests_log if p.startswith("/rest/v1.0/projects")]  # no listing
    state.refresh_from_db()
    # The next incremental lists the projects edited since the changes were read, not since the share was,
    # and the share does not make the stream's data look fresher than the changes read.
    assert state.cursor["listed"] == listed and state.last_success_at == fresh
    cursors = procore_streams.project_cursor(state.cursor)[1]
    assert str(edited) in cursors and all(str(p) in cursors for p in projects)


def test_the_share_alone_reads_nothing_before_a_first_run(connections: dict[str, Connection]) -> None:
    [run] = sync_connection(connection=connections["pm"], streams=["change_orders"], reads="share")

    assert run.status == "succeeded" and run.counts["api_calls"] == 0
    assert not StreamState.objects.get(connection=connections["pm"], stream="change_orders").cursor


def test_the_scheduled_task_reads_a_lost_change_within_a_day_of_runs(
    connections: dict[str, Connection],
    company: Company,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three scheduled runs a day: each task reads the changes and queues the share, which reads a third of
    # the projects; a change whose webhook was lost, in a project nobody edits, is read by the third run's
    # share, within the day, as when one run read both.
    from apps.connectors import tasks

    pm = connections["pm"]
    pm.schedule = "0 */8 * * *"
    pm.save()
    sync_connection(connection=pm)
    queued: list[int] = []
    monkeypatch.setattr(tasks.reconcile_share_task, "delay", queued.append)
    last_project = max(company.pc_projects)
    target = _not_void_in(company, last_project)
    change_record(company, "procore", "change_order", target, status="void")
    read_by: list[str] = []

    for number in (1, 2, 3):
        tasks.sync_connection_task(pm.pk)
        if ChangeOrder.objects.get(external_id=str(target)).status == "void":
            read_by.append(f"changes {number}")
        assert queued == [pm.pk]  # one share per incremental run, as its own task
        tasks.reconcile_share_task(queued.pop())
        if ChangeOrder.objects.get(external_id=str(target)).status == "void":
            read_by.append(f"share {number}")
            break

    assert read_by == ["share 3"]


def test_a_full_sync_queues_no_share(
    connections: dict[str, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.connectors import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.reconcile_share_task, "delay", queued.append)
    tasks.sync_connection_task(connections["pm"].pk, full=True)
    tasks.sync_connection_task(connections["crm"].pk)  # a kind without a share reads as before

    assert queued == []
    with pytest.raises(ValueError, match="reads"):
        sync_connection(connection=connections["pm"], full=True, reads="changes")


def test_a_new_project_is_read_on_the_next_incremental_run(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    pm = _rotating(connections["pm"], 1000)  # a share of one project a run
    template_project = company.pc_projects[min(company.pc_projects)]
    template_co = next(iter(company.pc_change_orders.values()))
    with company.lock:
        now = company.write_time()
        new_project = max(company.pc_projects) + 1
        new_co = max(company.pc_change_orders) + 1
        company.pc_projects[new_project] = replace(template_project, id=new_project, created=now, updated=now)
        company.pc_change_orders[new_co] = replace(
            template_co, id=new_co, project_id=new_project, status="pending", created=now, updated=now
        )
        company.changed()

    sync_connection(connection=pm, streams=["projects", "change_orders"])

    assert ChangeOrder.objects.get(external_id=str(new_co)).project_ref == str(new_project)
    state = StreamState.objects.get(connection=pm, stream="change_orders")
    assert str(new_project) in procore_streams.project_cursor(state.cursor)[1]


def test_a_project_deleted_upstream_is_dropped_not_failed(
    connections: dict[str, Connection], company: Company, simulator: SimulatorServer
) -> None:
    pm = _rotating(connections["pm"], 1)
    gone = min(company.pc_projects)
    company.delete("procore", "project", gone)

    [run] = sync_connection(connection=pm, streams=["change_orders"])

    assert run.status == "succeeded", run.error
    state = StreamState.objects.get(connection=pm, stream="change_orders")
    assert str(gone) not in procore_streams.project_cursor(state.cursor)[1]


def test_only_milestone_tasks_are_loaded(connections: dict[str, Connection], company: Company) -> None:
    sync_connection(connection=connections["pm"], streams=["projects", "milestones"])
    assert Milestone.objects.count() == sum(1 for t in company.pc_tasks.values() if t.milestone)
    assert Milestone.objects.filter(due_date__isnull=True).count() == 0


# ---- webhooks -------------------------------------------------------------------------------------------


@pytest.fixture
def hooks(connections: dict[str, Connection], rule_calls: list[Any]) -> dict[str, Connection]:
    pm = connections["pm"]
    pm.webhook_secrets = [PROCORE_AUTH]
    pm.save()
    return connections


@pytest.fixture
def client() -> Iterator[DjangoClient]:
    yield DjangoClient()


@pytest.mark.parametrize("version", ["v2.0", "v3.0", "v4.0"])
def test_each_payload_format_fetches_the_change_order_from_its_project(
    hooks: dict[str, Connection], company: Company, client: DjangoClient, version: str
) -> None:
    sync_stream(connection=hooks["pm"], stream="change_orders")
    target = sorted(company.pc_change_orders)[7]
    record = change_record(company, "procore", "change_order", target, status="no_charge")
    headers, body = procore_delivery(
        PROCORE_AUTH, event_for("procore", "change_order", record, payload_version=version)
    )

    answer = client.post("/webhooks/pm/", body, content_type="application/json", headers=headers)
    assert answer.status_code in (200, 202, 204), answer.content
    delivery = WebhookDelivery.objects.get()
    outcome = process_delivery(delivery.pk)

    assert outcome.status == "processed", outcome.error
    entity = ChangeOrder.objects.get(source=hooks["pm"], external_id=str(target))
    assert (entity.status, entity.project_ref) == ("approved", str(record.project_id))


def test_a_submittal_event_uses_the_mapped_custom_field(
    hooks: dict[str, Connection], company: Company, client: DjangoClient
) -> None:
    target = sorted(company.pc_submittals)[2]
    record = change_record(company, "procore", "submittal", target, schedule_critical=True)
    headers, body = procore_delivery(
        PROCORE_AUTH, event_for("procore", "submittal", record, "create", payload_version="v4.0")
    )
    client.post("/webhooks/pm/", body, content_type="application/json", headers=headers)

    outcome = process_delivery(WebhookDelivery.objects.get().pk)

    assert outcome.status == "processed", outcome.error
    submittal = Submittal.objects.get(external_id=str(target))
    assert submittal.schedule_critical is True and submittal.project_ref == str(record.project_id)


def test_the_project_cursor_packs_projects_by_their_cursor_and_still_reads_the_map() -> None:
    """Every page saves each project's cursor: packed as the projects sharing each cursor, it is a fifth of
    the ``{project id: cursor}`` map at 10,000 projects; a cursor saved as that map is still read."""
    run, earlier = "2026-12-07T10:00:00+00:00", "2026-12-06T09:00:00+00:00"
    projects = {str(p): ("" if p % 7 == 0 else run) for p in range(1, 10_001)}
    projects["12"] = earlier
    packed = procore_streams.projects_pack(projects)

    assert set(packed) == {"", run, earlier} and packed[earlier] == "12"
    assert list(procore_streams.projects_unpack(packed).items()) == list(projects.items())  # id order
    saved = {"updated_at": run, "id": "000000003", "listed": run, "floor": None}
    assert procore_streams.project_cursor({**saved, "projects_at": packed}) == (None, projects)
    assert procore_streams.project_cursor({**saved, "projects": projects}) == (None, projects)
    assert len(json.dumps(packed)) * 5 < len(json.dumps(projects))
