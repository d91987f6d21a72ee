"""CSV upload: an admin maps a file's columns to one entity's fields, previews, then imports.

There is no upstream to page: the kind has no scheduled streams. An import runs like one sync run of a stream
named ``csv:<entity>`` (same claim, upsert, quarantine and counts), fed from the uploaded file in pages.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.db import models

from apps.connectors.http import HttpClient
from apps.connectors.kinds.base import (
    BadRecord,
    ConfigurationError,
    ConnectorKind,
    Cursor,
    Page,
    Record,
    Stream,
    parse_datetime,
)
from apps.connectors.kinds.rest import convert_value
from apps.connectors.kinds.rest.options import ENTITIES, RELATIONS, RESERVED

PAGE_SIZE = 1000
MAX_BYTES = 20 * 1024 * 1024
IGNORE = ""


def entity_fields(entity: str) -> list[str]:
    """The fields of ``entity`` a column may map to."""
    model = ENTITIES[entity]
    return sorted(
        f.name
        for f in model._meta.concrete_fields
        if f.name not in RESERVED | RELATIONS and not f.primary_key
    )


@dataclass(frozen=True)
class CsvMapping:
    """Which column is the record id, which (optional) its last-modified time, and column -> field."""

    entity: str
    id_column: str
    columns: dict[str, str]
    updated_column: str = ""
    model: type[models.Model] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", ENTITIES.get(self.entity, models.Model))

    def errors(self, headers: list[str]) -> list[str]:
        problems = []
        if self.entity not in ENTITIES:
            return [f"entity {self.entity!r} is not one of {', '.join(sorted(ENTITIES))}"]
        allowed = set(entity_fields(self.entity))
        if self.id_column not in headers:
            problems.append(f"id column {self.id_column!r} is not in the file")
        if self.updated_column and self.updated_column not in headers:
            problems.append(f"updated-at column {self.updated_column!r} is not in the file")
        targets: dict[str, str] = {}
        for column, target in self.columns.items():
            if target == IGNORE:
                continue
            if column not in headers:
                problems.append(f"column {column!r} is not in the file")
            if target not in allowed:
                problems.append(f"column {column!r}: {self.entity} has no field {target!r}")
            elif target in targets:
                problems.append(f"field {target!r} is mapped from both {targets[target]!r} and {column!r}")
            targets[target] = column
        required = [
            f.name
            for f in self.model._meta.concrete_fields
            if f.name in allowed and not f.null and not f.blank and not f.has_default()
        ]
        problems += [f"{self.entity} needs a column for {name!r}" for name in required if name not in targets]
        return problems


def read_csv(data: bytes) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Headers and (line number, row) pairs of a UTF-8 (optionally BOM-prefixed) CSV."""
    if len(data) > MAX_BYTES:
        raise ConfigurationError(f"the file is over {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"the file is not UTF-8 (byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    headers = [h.strip() for h in reader.fieldnames or []]
    if not headers:
        raise ConfigurationError("the file has no header row")
    reader.fieldnames = headers

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for row in reader:
            yield reader.line_num, row

    return headers, rows()


class CsvStream(Stream):
    """The rows of one uploaded file as records of ``mapping.entity``."""

    def __init__(
        self, kind: ConnectorKind, mapping: CsvMapping, data: bytes, uploaded_at: dt.datetime
    ) -> None:
        super().__init__(kind)
        self.mapping = mapping
        self.data = data
        self.uploaded_at = uploaded_at
        self.name = f"csv:{mapping.entity}"  # type: ignore[misc]
        self.model = mapping.model  # type: ignore[misc]
        self.entity = mapping.entity  # type: ignore[misc]
        fields = {f.name: f for f in mapping.model._meta.concrete_fields}
        self._targets = [(column, fields[target]) for column, target in mapping.columns.items() if target]

    def pages(self, client: HttpClient | None, cursor: Cursor, full: bool) -> Iterator[Page]:
        _headers, rows = read_csv(self.data)
        batch: list[Record] = []
        for line, row in rows:
            batch.append({"_line": line, **{k: v for k, v in row.items() if k is not None}})
            if len(batch) >= PAGE_SIZE:
                yield Page(batch, cursor)
                batch = []
        if batch:
            yield Page(batch, cursor)

    def normalise(self, raw: Record) -> Record:
        record_id = str(raw.get(self.mapping.id_column) or "").strip()
        if not record_id:
            raise BadRecord(f"line {raw.get('_line')}: empty {self.mapping.id_column!r}")
        updated = (
            parse_datetime(raw.get(self.mapping.updated_column))
            if self.mapping.updated_column
            else self.uploaded_at
        )
        row: Record = {"external_id": record_id, "source_updated_at": updated}
        for column, model_field in self._targets:
            try:
                row[model_field.name] = convert_value(model_field, (raw.get(column) or "").strip())
            except BadRecord as exc:
                raise BadRecord(f"line {raw.get('_line')}: column {column!r}: {exc.reason}") from None
        return row


class Csv(ConnectorKind):
    kind = "csv"
    label = "CSV upload"
    stream_classes: ClassVar[list[type[Stream]]] = []

    def auth_headers(self) -> dict[str, str]:
        return {}

    def rate_budget(self) -> Any:
        return None
