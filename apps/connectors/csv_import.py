"""CSV uploads: preview (sample rows and every failing row with its reason), then import like a sync run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from apps.audit.services import Actor, audit_record
from apps.entities.loaders import validate_row

from .kinds import ConfigurationError, get_kind
from .kinds.csv import CsvMapping, CsvStream, read_csv
from .models import Connection, StreamState, SyncRun
from .services import COUNT_KEYS, _claim, _finish, _store_page, changes_publish, record_normalise

SAMPLE_ROWS = 10
MAX_FAILURES_SHOWN = 200


@dataclass
class CsvPreview:
    """What an import of the file would do, before it does it."""

    headers: list[str]
    mapping_errors: list[str] = field(default_factory=list)
    sample: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, normalised fields)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), the first 200
    total: int = 0
    failed: int = 0


def csv_preview(*, connection: Connection, data: bytes, mapping: CsvMapping) -> CsvPreview:
    """Parse and validate the whole file without writing: the first rows as they would load, the failures."""
    headers, rows = read_csv(data)
    preview = CsvPreview(headers=headers, mapping_errors=mapping.errors(headers))
    if preview.mapping_errors:
        return preview
    stream = CsvStream(get_kind(connection), mapping, data, timezone.now())
    for line, row in rows:
        preview.total += 1
        # Every row passes the checks an import makes; a value no parser expected fails its row only.
        normalised, reason = record_normalise(stream, {"_line": line, **row})
        if normalised is not None:
            reason = validate_row(mapping.model, normalised) or ""
        if normalised is None or reason:
            preview.failed += 1
            if len(preview.failures) < MAX_FAILURES_SHOWN:
                preview.failures.append((line, reason.removeprefix(f"line {line}: ")))
        elif len(preview.sample) < SAMPLE_ROWS:
            preview.sample.append((line, normalised))
    return preview


def csv_import(*, connection: Connection, data: bytes, mapping: CsvMapping, actor: Actor) -> SyncRun:
    """Upsert the file's rows into the mapped entity; bad rows are quarantined, never failing the import."""
    headers, _rows = read_csv(data)
    if problems := mapping.errors(headers):
        raise ConfigurationError("; ".join(problems))
    stream = CsvStream(get_kind(connection), mapping, data, timezone.now())
    run = _claim(connection, stream.name, True)
    StreamState.objects.get_or_create(connection=connection, stream=stream.name)
    counts: dict[str, Any] = {**dict.fromkeys(COUNT_KEYS, 0), "rate_limited_seconds": 0.0}
    changed: set[int] = set()
    try:
        for page in stream.pages(None, {}, True):
            changed.update(_store_page(run, stream, page, counts, learning=True))
    except Exception as exc:
        _finish(run, SyncRun.Status.FAILED, counts, f"{type(exc).__name__}: {exc}")
        raise
    _finish(run, SyncRun.Status.SUCCEEDED, counts)
    audit_record(
        action="connection.csv_imported",
        actor=actor,
        object_type="connection",
        object_id=connection.slug,
        data={"entity": mapping.entity, "columns": mapping.columns, **{k: counts[k] for k in COUNT_KEYS}},
    )
    changes_publish(connection, [run], {mapping.entity: changed} if changed else {}, scoped=False)
    return run
