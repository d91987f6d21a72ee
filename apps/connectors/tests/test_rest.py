"""The generic ``rest`` kind: every pagination style against the simulator's /generic/ API, option errors."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from apps.connectors.http import UpstreamError
from apps.connectors.kinds import ConfigurationError, get_kind
from apps.connectors.models import Connection, QuarantinedRecord
from apps.connectors.services import connection_import, sync_connection
from apps.entities.models import ChangeOrder, Project
from apps.simulator import Company, SimulatorServer

STYLE_SHAPES = {
    "cursor": {"records_path": "data", "pagination": {"style": "cursor", "page_size": 7}},
    "page": {"records_path": "data", "pagination": {"style": "page", "page_size": 7}},
    "offset": {"records_path": "items", "pagination": {"style": "offset", "page_size": 7}},
    "link": {"records_path": "", "pagination": {"style": "link", "page_size": 7}},
}
PROJECT_FIELDS = {
    "name": "attributes.title",
    "number": "attributes.code",
    "contract_value": "attributes.value",
    "schedule_status": "attributes.health",
    "start_date": "attributes.dates.start",
    "completion_date": "attributes.dates.end",
}
CO_FIELDS = {
    "number": "attributes.number",
    "title": "attributes.title",
    "status": "attributes.state",
    "amount": "attributes.total",
    "project_ref": "attributes.project.id",
    "created_upstream_at": "meta.created_at",
}


def rest_options(style: str) -> dict[str, Any]:
    shape = copy.deepcopy(STYLE_SHAPES[style])

    def stream(name: str, entity: str, fields: dict[str, str]) -> dict[str, Any]:
        return {
            "name": name,
            "entity": entity,
            "path": f"/generic/{style}/{name}",
            "updated_since_param": "updated_since",
            "id_path": "id",
            "updated_at_path": "meta.updated_at",
            "fields": fields,
            **copy.deepcopy(shape),
        }

    return copy.deepcopy(
        {
            "streams": [
                stream("projects", "project", PROJECT_FIELDS),
                stream("change_orders", "change_order", CO_FIELDS),
            ],
            "settle_seconds": 0,
        }
    )


def rest_connection(simulator: SimulatorServer, style: str, slug: str = "inhouse") -> Connection:
    [connection] = connection_import(
        data=[
            {
                "slug": slug,
                "kind": "rest",
                "base_url": simulator.base_url,
                "credentials": {"access_token": "sim-rest-token"},
                "options": rest_options(style),
            }
        ],
        actor="system:test",
    )
    return connection


def assert_equals_upstream(company: Company, connection: Connection) -> None:
    projects = dict(Project.objects.filter(source=connection).values_list("external_id", "source_updated_at"))
    assert projects == {
        str(p.id): dt.datetime.fromtimestamp(p.updated // 1000, tz=dt.UTC)
        for p in company.pc_projects.values()
    }
    cos = dict(ChangeOrder.objects.filter(source=connection).values_list("external_id", "amount"))
    assert cos == {str(c.id): Decimal(c.grand_total) / 100 for c in company.pc_change_orders.values()}


@pytest.mark.parametrize("style", ["cursor", "page", "offset", "link"])
def test_each_pagination_style_loads_exactly_the_upstream_and_resumes_incrementally(
    db: None, simulator: SimulatorServer, company: Company, fast_http: None, style: str
) -> None:
    connection = rest_connection(simulator, style)

    runs = sync_connection(connection=connection)

    assert [r.status for r in runs] == ["succeeded", "succeeded"], [r.error for r in runs]
    assert runs[0].counts["pages"] > 2  # seven per page: really paged
    assert_equals_upstream(company, connection)
    project = Project.objects.get(source=connection, external_id=str(next(iter(company.pc_projects))))
    upstream = company.pc_projects[int(project.external_id)]
    assert (project.name, project.number) == (upstream.name, upstream.project_number)
    assert project.start_date == upstream.start_date

    company.mutate(fraction=0.2, seed=5, now=timezone.now() - dt.timedelta(minutes=2))
    again = sync_connection(connection=connection)

    assert [r.status for r in again] == ["succeeded", "succeeded"]
    assert_equals_upstream(company, connection)
    # Incremental: far fewer records read than exist (only the lookback and the changed ones).
    assert again[1].counts["seen"] < len(company.pc_change_orders)
    assert QuarantinedRecord.objects.filter(connection=connection).count() == 0


def test_bad_records_are_quarantined_with_the_field_at_fault(
    db: None, simulator: SimulatorServer, company: Company, fast_http: None
) -> None:
    connection = rest_connection(simulator, "cursor")
    options = rest_options("cursor")
    options["streams"][0]["fields"]["contract_value"] = "attributes.title"  # not a number
    connection.options = options
    connection.save()

    runs = sync_connection(connection=connection, streams=["projects"])

    assert runs[0].status == "succeeded"
    rows = QuarantinedRecord.objects.filter(connection=connection).values_list("external_id", "reason")
    # Each reason names the record, the upstream field and the entity field it was to fill.
    assert rows and all(
        reason.startswith(f"record {external_id}: field 'attributes.title' (contract_value): not an amount")
        for external_id, reason in rows
    )
    assert Project.objects.filter(source=connection).count() == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: o.pop("streams"), "options.streams must be a non-empty list"),
        (lambda o: o["streams"][0].update(entity="widget"), "entity 'widget' is not one of"),
        (lambda o: o["streams"][0]["pagination"].update(style="scroll"), "pagination.style 'scroll'"),
        (lambda o: o["streams"][0]["pagination"].update(page_size=0), "page_size must be an integer"),
        (lambda o: o["streams"][0]["fields"].update(colour="x"), "fields.colour: Project has no such field"),
        (lambda o: o["streams"][0]["fields"].update(external_id="x"), "set by id_path"),
        (lambda o: o["streams"][1].update(name="projects"), "name 'projects' appears twice"),
        (lambda o: o["streams"][0].update(pager="x"), "unknown key 'pager'"),
    ],
)
def test_invalid_options_are_refused_with_a_message_naming_the_problem(
    db: None, simulator: SimulatorServer, change: Any, message: str
) -> None:
    connection = rest_connection(simulator, "page")
    options = rest_options("page")
    change(options)
    connection.options = options

    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace("[", r"\[")):
        _ = get_kind(connection).streams


def test_rest_options_are_checked_when_the_connections_file_is_imported(db: None) -> None:
    from apps.connectors.services import ConnectionFileError

    options = rest_options("page")
    options["streams"][0]["pagination"]["style"] = "scroll"
    item = {"slug": "inhouse", "kind": "rest", "base_url": "http://127.0.0.1:9", "options": options}

    with pytest.raises(ConnectionFileError, match=r"item 1 \(inhouse\): .*pagination.style 'scroll'"):
        connection_import(data=[item], actor="system:test")
    assert not Connection.objects.filter(slug="inhouse").exists()


def test_the_admin_form_refuses_invalid_rest_options(client: Any, administrator: Any) -> None:
    from django.urls import reverse

    client.force_login(administrator)
    options = rest_options("page")
    options["streams"][0]["entity"] = "widget"
    import json

    page = client.post(
        reverse("admin:connectors_connection_add"),
        {
            "slug": "inhouse",
            "kind": "rest",
            "base_url": "http://127.0.0.1:9",
            "schedule": "",
            "options": json.dumps(options),
            "enabled": "on",
        },
    )

    assert page.status_code == 200 and "entity &#x27;widget&#x27; is not one of" in page.content.decode()
    assert not Connection.objects.filter(slug="inhouse").exists()


def test_a_link_header_to_another_host_is_not_followed_with_our_token(
    db: None, simulator: SimulatorServer, fast_http: None
) -> None:
    import requests

    connection = rest_connection(simulator, "link")
    stream = get_kind(connection).stream("projects")
    client = get_kind(connection).client()
    asked: list[str] = []

    def fake(method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
        asked.append(path)
        response = requests.Response()
        response.headers["Link"] = '<http://evil.example/generic/link/projects?page=2>; rel="next"'
        record = {"id": 1, "meta": {"updated_at": "2026-01-01T00:00:00Z"}, "attributes": {"title": "x"}}
        return [record], response

    client.request_json = fake  # type: ignore[method-assign]
    pages = stream.pages(client, {}, True)
    assert len(next(pages).records) == 1
    with pytest.raises(UpstreamError, match="leads to another host"):
        next(pages)
    assert asked == ["/generic/link/projects"]
