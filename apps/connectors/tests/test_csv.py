"""CSV upload: mapping errors, preview of sample and failing rows, import through the upsert, quarantine."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.connectors.csv_import import csv_import, csv_preview
from apps.connectors.kinds import ConfigurationError
from apps.connectors.kinds.csv import CsvMapping
from apps.connectors.models import Connection, QuarantinedRecord
from apps.connectors.services import connection_import
from apps.entities.models import Project

FILE = (
    "\ufeffJob No,Job Name,Value,Health,Start,Modified\n"
    "P-1,Harbor Tower,125000.50,on_track,2026-01-05,2026-02-01T10:00:00Z\n"
    "P-2,Mill Street Lofts,not money,at_risk,2026-02-01,2026-02-01T10:00:00Z\n"
    ",Nameless,10,on_track,2026-03-01,2026-02-01T10:00:00Z\n"
    "P-4,Depot Yard,99.99,sideways,2026-04-01,2026-02-01T10:00:00Z\n"
    'P-5,"Quay, North",1000,behind,,2026-02-01T10:00:00Z\n'
).encode()
MAPPING = CsvMapping(
    entity="project",
    id_column="Job No",
    updated_column="Modified",
    columns={
        "Job No": "number",
        "Job Name": "name",
        "Value": "contract_value",
        "Health": "schedule_status",
        "Start": "start_date",
    },
)


@pytest.fixture
def upload(db: None) -> Connection:
    [connection] = connection_import(data=[{"slug": "spreadsheet", "kind": "csv"}], actor="system:test")
    return connection


def test_preview_shows_sample_rows_and_every_failing_row_with_its_reason(upload: Connection) -> None:
    preview = csv_preview(connection=upload, data=FILE, mapping=MAPPING)

    assert preview.mapping_errors == []
    assert (preview.total, preview.failed) == (5, 3)
    assert [line for line, _ in preview.sample] == [2, 6]
    assert preview.sample[0][1]["contract_value"] == Decimal("125000.50")
    assert preview.sample[1][1]["name"] == "Quay, North" and preview.sample[1][1]["start_date"] is None
    assert preview.failures == [
        (3, "column 'Value': not an amount: 'not money'"),
        (4, "empty 'Job No'"),
        (5, "schedule_status 'sideways' is not one of at_risk, behind, on_track"),
    ]
    assert Project.objects.count() == 0  # a preview writes nothing


def test_mapping_problems_are_listed_before_anything_is_read(upload: Connection) -> None:
    bad = CsvMapping(entity="project", id_column="Id", columns={"Job Name": "title", "Colour": "number"})

    preview = csv_preview(connection=upload, data=FILE, mapping=bad)

    assert preview.mapping_errors == [
        "id column 'Id' is not in the file",
        "column 'Job Name': project has no field 'title'",
        "column 'Colour' is not in the file",
        "project needs a column for 'name'",
    ]
    with pytest.raises(ConfigurationError, match="id column 'Id' is not in the file"):
        csv_import(connection=upload, data=FILE, mapping=bad, actor="system:test")


def test_import_upserts_good_rows_and_quarantines_bad_ones_without_failing(upload: Connection) -> None:
    run = csv_import(connection=upload, data=FILE, mapping=MAPPING, actor="system:test")

    assert run.status == "succeeded"
    assert (run.counts["inserted"], run.counts["quarantined"]) == (2, 3)
    assert dict(Project.objects.filter(source=upload).values_list("external_id", "name")) == {
        "P-1": "Harbor Tower",
        "P-5": "Quay, North",
    }
    assert QuarantinedRecord.objects.filter(connection=upload).count() == 3
    assert AuditEntry.objects.filter(action="connection.csv_imported").count() == 1

    again = csv_import(connection=upload, data=FILE, mapping=MAPPING, actor="system:test")
    assert (again.counts["inserted"], again.counts["updated"], again.counts["unchanged"]) == (0, 0, 2)


def test_admin_upload_previews_then_imports_from_the_kept_file(
    client: Any, administrator: Any, upload: Connection
) -> None:
    client.force_login(administrator)
    url = reverse("admin:connectors_connection_csv_upload", args=[upload.pk])
    fields = {"entity": "project", "id_column": "Job No", "updated_column": "Modified"}
    columns = (
        '{"Job No": "number", "Job Name": "name", "Value": "contract_value", "Health": "schedule_status"}'
    )

    assert (
        b"Upload, preview and import"
        in client.get(reverse("admin:connectors_connection_change", args=[upload.pk])).content
    )
    page = client.post(
        url, {**fields, "columns": columns, "preview": "1", "file": SimpleUploadedFile("p.csv", FILE)}
    )

    text = page.content.decode()
    assert page.status_code == 200 and "5 row(s), 3 would fail" in text
    assert "not an amount: &#x27;not money&#x27;" in text and "Harbor Tower" in text
    assert Project.objects.count() == 0

    done = client.post(
        url, {**fields, "columns": columns, "import": "1"}, follow=True
    )  # no file: the kept one

    assert "Imported 5 rows: 2 new" in done.content.decode()
    assert Project.objects.filter(source=upload).count() == 2


def test_an_import_that_died_before_publishing_is_published_by_the_next(
    upload: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    import apps.connectors.services as services
    from apps.connectors.models import SyncRun
    from apps.rules.models import PendingEvaluation

    def killed(*_: Any, **__: Any) -> None:
        raise RuntimeError("the web process died after the rows were committed")

    with monkeypatch.context() as patch:
        patch.setattr(services, "entities_changed_publish", killed)
        with pytest.raises(RuntimeError):
            csv_import(connection=upload, data=FILE, mapping=MAPPING, actor="system:test")
    stored = set(Project.objects.filter(source=upload).values_list("pk", flat=True))
    assert len(stored) == 2 and not PendingEvaluation.objects.exists()

    again = csv_import(connection=upload, data=FILE, mapping=MAPPING, actor="system:test")

    assert again.counts["unchanged"] == 2  # nothing new in the file: the first import's rows are published
    marked = PendingEvaluation.objects.filter(subject_type="project").values_list("subject_id", flat=True)
    assert stored <= set(marked)
    assert not SyncRun.objects.filter(connection=upload, published_at__isnull=True).exists()
