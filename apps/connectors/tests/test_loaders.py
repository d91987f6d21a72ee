"""The page upsert (apps.entities.loaders): one statement, versions guarded, unchanged rows untouched."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.connectors.models import Connection
from apps.entities.loaders import content_hash, upsert_rows
from apps.entities.models import FinancialLine, SourceObject

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def accounting(db: None) -> Connection:
    return Connection.objects.create(slug="acct", kind="quickbooks", base_url="http://127.0.0.1:9")


def line(external_id: str, amount: str, updated: dt.datetime, **extra: Any) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "source_updated_at": updated,
        "kind": "invoice",
        "job_ref": "7",
        "amount": Decimal(amount),
        "balance": None,
        "txn_date": dt.date(2026, 1, 1),
        "due_date": None,
        **extra,
    }


def test_insert_update_and_unchanged_are_counted_in_one_statement(accounting: Connection) -> None:
    first = upsert_rows(
        FinancialLine,
        source_id=accounting.pk,
        rows=[line("1", "10.00", T0), line("2", "20.00", T0)],
        now=timezone.now(),
    )
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)

    later = T0 + dt.timedelta(hours=1)
    with CaptureQueriesContext(db_connection) as queries:
        second = upsert_rows(
            FinancialLine,
            source_id=accounting.pk,
            rows=[line("1", "10.00", later), line("2", "25.00", later), line("3", "1.00", later)],
            now=timezone.now(),
        )

    assert len(queries) == 1
    assert (second.inserted, second.updated, second.unchanged) == (1, 1, 1)
    changed = set(FinancialLine.objects.filter(external_id__in=["2", "3"]).values_list("id", flat=True))
    assert set(second.changed_ids) == changed
    assert FinancialLine.objects.get(external_id="2").amount == Decimal("25.00")
    # An unchanged record is not written at all: its stored version stays what it was.
    assert FinancialLine.objects.get(external_id="1").source_updated_at == T0


def test_an_older_version_never_overwrites_a_newer_one(accounting: Connection) -> None:
    upsert_rows(FinancialLine, source_id=accounting.pk, rows=[line("1", "50.00", T0)], now=timezone.now())

    stale = upsert_rows(
        FinancialLine,
        source_id=accounting.pk,
        rows=[line("1", "40.00", T0 - dt.timedelta(seconds=1))],
        now=timezone.now(),
    )

    assert (stale.updated, stale.unchanged) == (0, 1)
    assert FinancialLine.objects.get(external_id="1").amount == Decimal("50.00")


def test_the_same_record_twice_on_a_page_keeps_the_newest(accounting: Connection) -> None:
    rows = [line("1", "1.00", T0 + dt.timedelta(seconds=5)), line("1", "2.00", T0), line("1", "1.00", T0)]

    result = upsert_rows(FinancialLine, source_id=accounting.pk, rows=rows, now=timezone.now())

    assert (result.inserted, result.unchanged) == (1, 2)
    assert FinancialLine.objects.get().amount == Decimal("1.00")


def test_rows_the_database_would_refuse_are_returned_not_raised(accounting: Connection) -> None:
    rows = [
        line("1", "1.00", T0),
        line("2", "1.00", T0, kind="refund"),
        line("3", "1.00", T0, job_ref="9" * 65),
    ]

    result = upsert_rows(FinancialLine, source_id=accounting.pk, rows=rows, now=timezone.now())

    assert result.inserted == 1
    assert [(row["external_id"], reason) for row, reason in result.rejected] == [
        ("2", "kind 'refund' is not one of bill, estimate, invoice, purchase"),
        ("3", "job_ref is longer than 64 characters"),
    ]


def test_crosswalk_rows_keep_their_links_when_upstream_changes(accounting: Connection) -> None:
    job = {
        "external_id": "9",
        "source_updated_at": T0,
        "object_type": "job",
        "name": "P-1 Clinic",
        "match_key": "P-1",
        "parent_ref": "3",
    }
    upsert_rows(SourceObject, source_id=accounting.pk, rows=[job], now=timezone.now())
    SourceObject.objects.update(match_method="manual")

    upsert_rows(
        SourceObject,
        source_id=accounting.pk,
        rows=[{**job, "name": "P-1 Clinic B", "source_updated_at": T0 + dt.timedelta(1)}],
        now=timezone.now(),
    )

    row = SourceObject.objects.get()
    assert (row.name, row.match_method, row.connection_id) == ("P-1 Clinic B", "manual", accounting.pk)


def test_the_content_hash_ignores_the_upstream_timestamp_and_key_order() -> None:
    a = line("1", "1.00", T0)
    b = dict(reversed(list(line("1", "1.00", T0 + dt.timedelta(days=1)).items())))
    assert content_hash(a) == content_hash(b) != content_hash(line("1", "1.01", T0))
