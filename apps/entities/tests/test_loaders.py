"""The page upsert as one jsonb document: values arrive exactly, hashes match, the rules of the upsert hold.

The basic insert / update / unchanged / version-guard cases are in apps/connectors/tests/test_loaders.py;
these cover what the JSON transport itself could get wrong.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.connectors.models import Connection
from apps.entities.loaders import content_hash, upsert_rows
from apps.entities.models import Client, FinancialLine, SourceObject, Submittal
from tests.factories import ConnectionFactory

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def pm(db: None) -> Connection:
    return ConnectionFactory(slug="pm", kind="procore")


def submittal(external_id: str, updated: dt.datetime = T0, **extra: Any) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "source_updated_at": updated,
        "project_ref": "p1",
        "title": "Shop drawings",
        "created_upstream_at": T0,
        **extra,
    }


def test_awkward_values_arrive_exactly_and_the_stored_hash_is_the_records_hash(pm: Connection) -> None:
    pacific = ZoneInfo("America/Los_Angeles")
    row = submittal(
        "1",
        updated=dt.datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=pacific),
        title="Quote \" back\\slash \\n ünïcødé 漢字 😀 ' %s %(page)s",
        number="",
        status="open",
        revision=3,
        schedule_critical=True,
        due_date=dt.date(2026, 2, 28),
        returned_date=None,
        created_upstream_at=dt.datetime(2025, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    )

    result = upsert_rows(Submittal, source_id=pm.pk, rows=[row], now=timezone.now())

    stored = Submittal.objects.get(pk=result.changed_ids[0])
    assert stored.title == row["title"]
    assert (stored.number, stored.status, stored.revision, stored.schedule_critical) == ("", "open", 3, True)
    assert (stored.due_date, stored.returned_date) == (dt.date(2026, 2, 28), None)
    assert stored.source_updated_at == row["source_updated_at"]  # the same instant
    assert stored.created_upstream_at == row["created_upstream_at"]
    assert stored.content_hash == content_hash(row)


def test_amounts_keep_every_digit(db: None) -> None:
    accounting = ConnectionFactory(slug="acct", kind="quickbooks")
    amounts = [Decimal("0.01"), Decimal("-123456789012.99"), Decimal("1E+2"), Decimal("0")]
    rows = [
        {"external_id": str(i), "source_updated_at": T0, "kind": "bill", "amount": amount, "balance": None}
        for i, amount in enumerate(amounts)
    ]

    upsert_rows(FinancialLine, source_id=accounting.pk, rows=rows, now=timezone.now())

    stored = dict(FinancialLine.objects.values_list("external_id", "amount"))
    assert [stored[str(i)] for i in range(len(amounts))] == amounts


def test_a_key_some_records_leave_out_gets_the_columns_default(pm: Connection) -> None:
    rows = [submittal("1", revision=4, schedule_critical=True), submittal("2")]

    upsert_rows(Submittal, source_id=pm.pk, rows=rows, now=timezone.now())

    assert dict(Submittal.objects.values_list("external_id", "revision")) == {"1": 4, "2": 0}
    assert dict(Submittal.objects.values_list("external_id", "schedule_critical")) == {"1": True, "2": False}


def test_a_key_no_record_sends_is_filled_on_insert_and_left_alone_on_update(db: None) -> None:
    accounting = ConnectionFactory(slug="acct", kind="quickbooks")
    job = {
        "external_id": "9",
        "source_updated_at": T0,
        "object_type": "job",
        "name": "P-1",
        "match_key": "P-1",
    }
    upsert_rows(SourceObject, source_id=accounting.pk, rows=[job], now=timezone.now())
    assert SourceObject.objects.get().match_method == ""
    SourceObject.objects.update(match_method="manual")

    changed = upsert_rows(
        SourceObject,
        source_id=accounting.pk,
        rows=[{**job, "name": "P-1 B", "source_updated_at": T0 + dt.timedelta(1)}],
        now=timezone.now(),
    )

    assert changed.updated == 1
    assert SourceObject.objects.get().match_method == "manual"


def test_a_nul_character_is_a_bad_record_not_a_failed_page(pm: Connection) -> None:
    rows = [submittal("1"), submittal("2", title="bad\x00title")]

    result = upsert_rows(Submittal, source_id=pm.pk, rows=rows, now=timezone.now())

    assert result.inserted == 1
    assert [(r["external_id"], reason) for r, reason in result.rejected] == [
        ("2", "title contains a NUL character")
    ]


def test_records_may_not_set_what_the_loader_owns(pm: Connection) -> None:
    with pytest.raises(ValueError, match="deleted_at"):
        upsert_rows(Submittal, source_id=pm.pk, rows=[submittal("1", deleted_at=T0)], now=timezone.now())


def test_a_tombstone_sent_again_revives_unless_merged_and_only_when_not_older(db: None) -> None:
    crm = ConnectionFactory(slug="crm", kind="hubspot")

    def company(external_id: str, updated: dt.datetime) -> dict[str, Any]:
        return {"external_id": external_id, "source_updated_at": updated, "name": f"Co {external_id}"}

    first = upsert_rows(
        Client, source_id=crm.pk, rows=[company("a", T0), company("b", T0), company("c", T0)], now=T0
    )
    a, b, c = sorted(first.changed_ids)
    Client.objects.filter(pk__in=[a, b, c]).update(deleted_at=T0)
    Client.objects.filter(pk=b).update(merged_into=a)

    later = T0 + dt.timedelta(hours=1)
    again = upsert_rows(
        Client,
        source_id=crm.pk,
        rows=[company("a", later), company("b", later), company("c", T0 - dt.timedelta(hours=1))],
        now=later,
    )

    # a: revived (a change); b: merged, same content: nothing to do; c: older than what is held.
    assert again.changed_ids == [a]
    assert (again.updated, again.unchanged) == (1, 2)
    deleted = dict(Client.objects.values_list("external_id", "deleted_at"))
    assert deleted == {"a": None, "b": T0, "c": T0}


def test_one_statement_per_page_whatever_its_size(pm: Connection) -> None:
    rows = [submittal(str(i), number=f"S-{i}") for i in range(2500)]

    with CaptureQueriesContext(db_connection) as queries:
        result = upsert_rows(Submittal, source_id=pm.pk, rows=rows, now=timezone.now())

    assert len(queries) == 1
    assert result.inserted == 2500 == Submittal.objects.count()
    with CaptureQueriesContext(db_connection) as queries:
        again = upsert_rows(Submittal, source_id=pm.pk, rows=rows, now=timezone.now())
    assert (len(queries), again.unchanged, again.changed_ids) == (1, 2500, [])


def test_a_child_whose_parent_is_already_here_is_linked_as_it_is_inserted(pm: Connection) -> None:
    from apps.entities.linking import link_entities
    from apps.entities.models import Project, Vendor

    now = timezone.now()
    upsert_rows(
        Project,
        source_id=pm.pk,
        rows=[
            {"external_id": e, "source_updated_at": T0, "name": e, "contract_value": Decimal(1)}
            for e in ("p1", "p2")
        ],
        now=now,
    )
    upsert_rows(
        Vendor, source_id=pm.pk, rows=[{"external_id": "v1", "source_updated_at": T0, "name": "V"}], now=now
    )
    p1, p2 = Project.objects.get(external_id="p1"), Project.objects.get(external_id="p2")
    Project.objects.filter(pk=p2.pk).update(merged_into=p1, deleted_at=now)
    rows = [
        submittal("1", vendor_ref="v1"),
        submittal("2", project_ref="p2"),
        submittal("3", project_ref="p9"),
    ]

    upsert_rows(Submittal, source_id=pm.pk, rows=rows, now=now)

    linked = {s.external_id: (s.project_id, s.vendor_id) for s in Submittal.objects.all()}
    vendor = Vendor.objects.get().pk
    assert linked == {"1": (p1.pk, vendor), "2": (p1.pk, None), "3": (None, None)}
    counts = link_entities()  # the linking pass agrees: nothing left to change
    assert counts["submittal_project"] == counts["submittal_vendor"] == 0
