"""Bad upstream values cost their record only: quarantined with the value in the reason, on every path.

A sync page, a webhook (its record sent or fetched) and a CSV upload meet the same values: amounts no
column holds (``1e30``, ``1e26``, ``-1e30``, ``NaN``, ``Infinity``, ``1e12`` for ``numeric(14, 2)``), dates no
calendar holds, whole numbers beyond ``integer``. Upstream JSON is served as raw text over loopback, so
tokens Python's JSON reader accepts and PostgreSQL's jsonb refuses (``NaN``) arrive exactly as on the wire.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as DjangoClient
from django.urls import reverse

from apps.connectors.csv_import import csv_import, csv_preview
from apps.connectors.kinds.base import BadRecord, parse_date, parse_datetime, parse_money
from apps.connectors.kinds.csv import CsvMapping
from apps.connectors.models import Connection, QuarantinedRecord, SyncRun, WebhookDelivery
from apps.connectors.services import connection_import, sync_connection
from apps.connectors.webhooks.processing import process_delivery
from apps.entities.loaders import validate_row
from apps.entities.models import ChangeOrder, Project, Submittal
from apps.simulator.webhooks import new_standard_secret, standard_delivery

from .loopback import Upstream, rest_stream, serve

UPDATED = "2026-01-05T10:00:00Z"
SECRET = new_standard_secret(seed=21)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e30", "amount out of range: '1e30'"),
        ("1e26", "amount out of range: '1e26'"),
        ("-1e30", "amount out of range: '-1e30'"),
        (1e30, "amount out of range: 1e+30"),
        ("NaN", "not an amount: 'NaN'"),
        (float("nan"), "not an amount: nan"),
        ("Infinity", "not an amount: 'Infinity'"),
        (float("-inf"), "not an amount: -inf"),
        (True, "not an amount: True"),
        ({"amount": 1}, "not an amount: {'amount': 1}"),
        ("12 USD", "not an amount: '12 USD'"),
    ],
)
def test_parse_money_refuses_every_unstorable_amount_as_a_bad_record(value: Any, reason: str) -> None:
    with pytest.raises(BadRecord) as refused:
        parse_money(value)
    assert refused.value.reason == reason


def test_parse_money_keeps_ordinary_amounts() -> None:
    assert parse_money("1234.567") == Decimal("1234.57")
    assert parse_money(999999999999.99) == Decimal("999999999999.99")
    assert parse_money(" ", required=False) is None


@pytest.mark.parametrize("value", ["99999999999999999999", 1e300, float("nan"), float("inf"), True])
def test_dates_no_calendar_holds_are_bad_records(value: Any) -> None:
    with pytest.raises(BadRecord, match="date-time"):
        parse_datetime(value)
    with pytest.raises(BadRecord, match="date"):
        parse_date(value)


def test_an_instant_with_no_utc_equivalent_is_a_bad_record() -> None:
    with pytest.raises(BadRecord, match="out of range"):
        parse_datetime("0001-01-01T00:00:00+05:00")


def test_validate_row_checks_each_value_against_its_column() -> None:
    base = {"external_id": "1", "source_updated_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "title": "t"}
    created = {"created_upstream_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}

    submittal = {**base, **created}
    assert validate_row(Submittal, {**submittal, "revision": 3}) is None
    assert validate_row(Submittal, {**submittal, "revision": 2**31}) == "revision 2147483648 is out of range"
    assert validate_row(Submittal, {**submittal, "revision": 2.5}) == "revision is not a whole number: 2.5"
    assert validate_row(Submittal, {**submittal, "revision": "3"}) == "revision is not a number: '3'"
    assert validate_row(Submittal, {**base, **created, "schedule_critical": "yes"}) == (
        "schedule_critical is not true or false: 'yes'"
    )
    assert validate_row(Submittal, {**base, **created, "due_date": "2026-01-01"}) == (
        "due_date is not a date: '2026-01-01'"
    )
    project = {"external_id": "1", "source_updated_at": base["source_updated_at"], "name": "Pier"}
    assert validate_row(Project, {**project, "schedule_status": ""}) is None  # blank: no value, not bad
    assert validate_row(Project, {**project, "schedule_status": "sideways"}) == (
        "schedule_status 'sideways' is not one of at_risk, behind, on_track"
    )
    co = {**base, **created, "project_ref": "p", "status": "pending"}
    assert validate_row(ChangeOrder, {**co, "amount": Decimal("999999999999.99")}) is None
    # PostgreSQL rounds to two places before it checks the precision: this one would overflow.
    assert validate_row(ChangeOrder, {**co, "amount": Decimal("999999999999.995")}) == (
        "amount 999999999999.995 is out of range"
    )
    assert validate_row(ChangeOrder, {**co, "amount": Decimal("NaN")}) == (
        "amount is not a finite number: Decimal('NaN')"
    )
    assert validate_row(ChangeOrder, {**co, "amount": 1e30}) == "amount is not a decimal amount: 1e+30"


# ---- a sync page ------------------------------------------------------------------------------------------

JOBS = {
    "good": '{"id": "1", "updated": "%s", "title": "Harbor", "value": "1500.00", "start": "2026-01-05"}',
    "1e30": '{"id": "2", "updated": "%s", "title": "A", "value": 1e30}',
    "1e26": '{"id": "3", "updated": "%s", "title": "B", "value": "1e26"}',
    "-1e30": '{"id": "4", "updated": "%s", "title": "C", "value": -1e30}',
    "NaN": '{"id": "5", "updated": "%s", "title": "D", "value": NaN}',
    "Infinity": '{"id": "6", "updated": "%s", "title": "E", "value": Infinity}',
    "column": '{"id": "7", "updated": "%s", "title": "F", "value": "1e12"}',
    "rounding": '{"id": "8", "updated": "%s", "title": "G", "value": 999999999999.995}',
    "date": '{"id": "9", "updated": "%s", "title": "H", "start": "99999999999999999999"}',
    "largest": '{"id": "11", "updated": "%s", "title": "I", "value": 999999999999.99}',
    "unknown": '{"id": "12", "updated": "%s", "title": "J", "value": "10", "health": "sideways"}',
}
SUBMITTALS = {
    "good": '{"id": "s1", "updated": "%s", "title": "Steel", "rev": 2}',
    "integer": '{"id": "s2", "updated": "%s", "title": "Glass", "rev": 99999999999}',
    "infinite": '{"id": "s3", "updated": "%s", "title": "Doors", "rev": Infinity}',
    "text": '{"id": "s4", "updated": "%s", "title": "Roof", "rev": "1e5"}',
}
# The rest kind names the value; the loader names the column as well.
EXPECTED_REASONS = {
    "2": "record 2: field 'value' (contract_value): amount out of range: 1e+30",
    "3": "record 3: field 'value' (contract_value): amount out of range: '1e26'",
    "4": "record 4: field 'value' (contract_value): amount out of range: -1e+30",
    "5": "record 5: field 'value' (contract_value): not an amount: nan",
    "6": "record 6: field 'value' (contract_value): not an amount: inf",
    "7": "contract_value 1000000000000.00 is out of range",
    "8": "contract_value 1000000000000.00 is out of range",
    "9": "record 9: field 'start' (start_date): date-time out of range: '99999999999999999999'",
    "12": "schedule_status 'sideways' is not one of at_risk, behind, on_track",
    "s2": "revision 99999999999 is out of range",
    "s3": "record s3: field 'rev' (revision): OverflowError: cannot convert float infinity to integer",
    "s4": "record s4: field 'rev' (revision): revision is not a whole number: '1e5'",
}


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with serve() as server:
        server.records("/jobs", [text % UPDATED for text in JOBS.values()])
        server.records("/subs", [text % UPDATED for text in SUBMITTALS.values()])
        server.routes["/jobs/5"] = lambda query: (200, {}, JOBS["NaN"] % UPDATED)
        yield server


def rest_connection(upstream: Upstream) -> Connection:
    [connection] = connection_import(
        data=[
            {
                "slug": "inhouse",
                "kind": "rest",
                "base_url": upstream.base_url,
                "credentials": {"access_token": "t"},
                "webhook_secret": SECRET,
                "options": {
                    "settle_seconds": 0,
                    "streams": [
                        {
                            **rest_stream(
                                "jobs",
                                "project",
                                "/jobs",
                                {
                                    "name": "title",
                                    "contract_value": "value",
                                    "start_date": "start",
                                    "schedule_status": "health",
                                },
                            ),
                            "detail_path": "/jobs/{id}",
                        },
                        rest_stream(
                            "subs",
                            "submittal",
                            "/subs",
                            {"title": "title", "revision": "rev", "created_upstream_at": "updated"},
                        ),
                    ],
                },
            }
        ],
        actor="system:test",
    )
    return connection


def quarantined(connection: Connection, **filters: Any) -> dict[str, str]:
    rows = QuarantinedRecord.objects.filter(connection=connection, **filters)
    return dict(rows.values_list("external_id", "reason"))


def test_bad_values_on_a_sync_page_are_quarantined_and_the_run_succeeds_every_time(
    db: None, upstream: Upstream, fast_http: None
) -> None:
    connection = rest_connection(upstream)

    for attempt in (1, 2):
        runs = sync_connection(connection=connection)

        assert [(r.stream, r.status) for r in runs] == [("jobs", "succeeded"), ("subs", "succeeded")], [
            r.error for r in runs
        ]
        assert runs[0].counts["quarantined"] == 9 and runs[1].counts["quarantined"] == 3
        assert quarantined(connection, run__in=runs) == EXPECTED_REASONS, attempt

    projects = dict(Project.objects.filter(source=connection).values_list("external_id", "contract_value"))
    assert projects == {"1": Decimal("1500.00"), "11": Decimal("999999999999.99")}
    assert list(Submittal.objects.filter(source=connection).values_list("external_id", "revision")) == [
        ("s1", 2)
    ]
    # The record is kept as the vendor sent it; jsonb has no NaN, so the token is kept as its text.
    nan = QuarantinedRecord.objects.filter(connection=connection, external_id="5").first()
    assert nan is not None and nan.payload["value"] == "NaN" and nan.payload["title"] == "D"


def test_quarantined_values_are_counted_in_admin(
    db: None, upstream: Upstream, fast_http: None, client: DjangoClient, administrator: Any
) -> None:
    connection = rest_connection(upstream)
    sync_connection(connection=connection)
    client.force_login(administrator)

    runs = client.get(reverse("admin:connectors_syncrun_changelist")).content.decode()
    listed = client.get(reverse("admin:connectors_quarantinedrecord_changelist")).content.decode()

    assert "9 quarantined" in runs and "3 quarantined" in runs
    assert "amount out of range: &#x27;1e26&#x27;" in listed
    assert "schedule_status &#x27;sideways&#x27; is not one of" in listed
    assert "revision 99999999999 is out of range" in listed


# ---- webhooks: the record sent, and the record fetched -------------------------------------------------


def test_a_webhook_record_with_a_bad_value_is_quarantined_not_failed(
    db: None, upstream: Upstream, fast_http: None, client: DjangoClient
) -> None:
    connection = rest_connection(upstream)
    sent = {"id": "w1", "updated": UPDATED, "title": "Pier", "value": 1e30}

    for data in (sent, {"id": "5"}):  # the record itself; an id-only event fetching a NaN amount
        headers, body = standard_delivery(SECRET, "jobs.updated", data)
        content_type = headers.pop("Content-Type")
        answer = client.post("/webhooks/inhouse/", data=body, content_type=content_type, headers=headers)
        assert answer.status_code == 202, answer.content
        outcome = process_delivery(answer.json()["id"])
        assert (outcome.status, outcome.counts["quarantined"]) == ("processed", 1), outcome.error

    assert WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PROCESSED).count() == 2
    reasons = quarantined(connection)
    assert reasons["w1"] == "webhook: record w1: field 'value' (contract_value): amount out of range: 1e+30"
    assert reasons["5"] == "webhook: record 5: field 'value' (contract_value): not an amount: nan"
    assert not Project.objects.filter(source=connection).exists()


# ---- CSV upload -------------------------------------------------------------------------------------------

CSV = (
    b"Job No,Job Name,Value,Start\n"
    b"P-1,Harbor Tower,125000.50,2026-01-05\n"
    b"P-2,Mill Street,1e30,2026-01-05\n"
    b"P-3,Depot,1e26,2026-01-05\n"
    b"P-4,Quay,-1e30,2026-01-05\n"
    b"P-5,Yard,NaN,2026-01-05\n"
    b"P-6,Dock,Infinity,2026-01-05\n"
    b"P-7,Pier,1e12,2026-01-05\n"
    b"P-8,Wharf,10,99999999999999999999\n"
)
CSV_MAPPING = CsvMapping(
    entity="project",
    id_column="Job No",
    columns={"Job No": "number", "Job Name": "name", "Value": "contract_value", "Start": "start_date"},
)
CSV_FAILURES = [
    (3, "column 'Value': amount out of range: '1e30'"),
    (4, "column 'Value': amount out of range: '1e26'"),
    (5, "column 'Value': amount out of range: '-1e30'"),
    (6, "column 'Value': not an amount: 'NaN'"),
    (7, "column 'Value': not an amount: 'Infinity'"),
    (8, "contract_value 1000000000000.00 is out of range"),
    (9, "column 'Start': date-time out of range: '99999999999999999999'"),
]


@pytest.fixture
def upload(db: None) -> Connection:
    [connection] = connection_import(data=[{"slug": "sheet", "kind": "csv"}], actor="system:test")
    return connection


def test_csv_preview_and_import_quarantine_out_of_range_values(upload: Connection) -> None:
    preview = csv_preview(connection=upload, data=CSV, mapping=CSV_MAPPING)

    assert (preview.total, preview.failed) == (8, 7)
    assert preview.failures == CSV_FAILURES

    run = csv_import(connection=upload, data=CSV, mapping=CSV_MAPPING, actor="system:test")

    assert run.status == SyncRun.Status.SUCCEEDED and run.counts["quarantined"] == 7
    assert list(Project.objects.filter(source=upload).values_list("number", flat=True)) == ["P-1"]
    assert QuarantinedRecord.objects.filter(connection=upload).count() == 7


def test_admin_csv_upload_with_out_of_range_values_shows_the_failing_rows_never_a_500(
    client: DjangoClient, administrator: Any, upload: Connection
) -> None:
    client.force_login(administrator)
    url = reverse("admin:connectors_connection_csv_upload", args=[upload.pk])
    fields = {
        "entity": "project",
        "id_column": "Job No",
        "updated_column": "",
        "columns": (
            '{"Job No": "number", "Job Name": "name", "Value": "contract_value", "Start": "start_date"}'
        ),
    }

    page = client.post(url, {**fields, "preview": "1", "file": SimpleUploadedFile("p.csv", CSV)})

    text = page.content.decode()
    assert page.status_code == 200 and "8 row(s), 7 would fail" in text
    assert "amount out of range: &#x27;1e30&#x27;" in text and "not an amount: &#x27;NaN&#x27;" in text

    done = client.post(url, {**fields, "import": "1"}, follow=True)

    assert done.status_code == 200 and "Imported 8 rows: 1 new" in done.content.decode()
    assert QuarantinedRecord.objects.filter(connection=upload).count() == 7
