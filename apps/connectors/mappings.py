"""What a connection's field mappings find upstream: for each of its kind's ``field_mappings``, the vendor
field it reads and the value a sample of real records holds there, or why there is none.

Works from the declarations alone (``ConnectorKind.field_mappings`` and ``mapped()``): the sample is the
first page of each stream, read until every mapping has a value, and a field is looked for wherever a vendor
keeps its tenant-specific fields — a dotted path (``custom_fields.custom_field_12.value``), a key at any
depth (HubSpot's ``properties.<name>``), or a list entry naming it (QuickBooks' ``CustomField`` items with
``Name``/``StringValue``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .http import UpstreamError
from .kinds import ConfigurationError, ConnectorKind, get_kind
from .kinds.base import FieldMapping, Record
from .models import Connection

MAX_DEPTH = 6
SAMPLE_SHOWN = 80  # characters of a found value shown
# Keys under which a list entry names itself, and keys holding its value (QuickBooks CustomField, Procore
# custom field lists, generic {"name", "value"} pairs).
_ENTRY_NAMES = ("Name", "name", "label", "DefinitionId", "id")
_ENTRY_VALUES = ("value", "Value", "StringValue", "NumberValue", "DateValue", "BooleanValue")
_MISSING = object()


@dataclass(frozen=True)
class MappingProbe:
    """One mapping on a sample: the vendor field read, and the value found or the reason there is none."""

    name: str
    field: str
    default: str
    value: Any = None
    found_on: str = ""  # "<stream> <record id>"
    reason: str = ""

    def __str__(self) -> str:
        configured = "" if self.field == self.default else f" (default {self.default})"
        head = f"{self.name} → {self.field}{configured}"
        if self.reason:
            return f"{head}: missing — {self.reason}"
        shown = str(self.value)
        shown = shown if len(shown) <= SAMPLE_SHOWN else shown[: SAMPLE_SHOWN - 1] + "…"
        return f"{head}: {shown!r} on {self.found_on}"


def find_field(raw: Any, field: str) -> Any:
    """The value of ``field`` in a raw vendor record, or ``_MISSING``: a dotted path first, then the first
    key of that name at any depth, then a list entry naming it."""
    if "." in field:
        value = _dig(raw, field.split("."))
        if value is not _MISSING:
            return value
    return _search(raw, field, 0)


def _dig(raw: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return _MISSING
    return raw


def _search(raw: Any, field: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        return _MISSING
    if isinstance(raw, dict):
        if field in raw:
            return raw[field]
        for value in raw.values():
            found = _search(value, field, depth + 1)
            if found is not _MISSING:
                return found
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and any(str(item.get(key)) == field for key in _ENTRY_NAMES):
                return next((item[key] for key in _ENTRY_VALUES if key in item), None)
            found = _search(item, field, depth + 1)
            if found is not _MISSING:
                return found
    return _MISSING


def _record_label(stream: str, raw: Record) -> str:
    record_id = raw.get("id", raw.get("Id", "")) if isinstance(raw, dict) else ""
    return f"{stream} {record_id}".strip()


def probe_mappings(
    kind: ConnectorKind, samples: Iterable[tuple[str, list[Record]]], errors: dict[str, str] | None = None
) -> list[MappingProbe]:
    """Each of ``kind``'s mappings against sample records (stream name, records), in declaration order."""
    samples = list(samples)
    errors = errors or {}
    records = [(stream, raw) for stream, rows in samples for raw in rows]
    probes = []
    for mapping in kind.field_mappings:
        probes.append(_probe(kind, mapping, records, [s for s, _ in samples], errors))
    return probes


def _probe(
    kind: ConnectorKind,
    mapping: FieldMapping,
    records: list[tuple[str, Record]],
    streams: list[str],
    errors: dict[str, str],
) -> MappingProbe:
    field = kind.mapped(mapping.name)
    base = {"name": mapping.name, "field": field, "default": mapping.default}
    present = 0
    for stream, raw in records:
        value = find_field(raw, field)
        if value is _MISSING:
            continue
        present += 1
        if value not in (None, "", [], {}):
            return MappingProbe(**base, value=value, found_on=_record_label(stream, raw))
    failed = "; ".join(f"{stream}: {error}" for stream, error in errors.items())
    if not records:
        reason = "no sample records to look in" + (f" ({failed})" if failed else "")
    elif present:
        reason = f"present but empty on all {present} sampled record(s) that have it"
    else:
        where = ", ".join(streams)
        reason = (
            f"not on any of the {len(records)} sampled record(s) ({where}); check the field's name upstream"
        )
    return MappingProbe(**base, reason=reason)


def connection_field_mappings(*, connection: Connection) -> list[MappingProbe]:
    """Read a sample (the first page of each stream, until every mapping has a value) and probe each of the
    connection's field mappings against it. Nothing is stored. A kind without mappings gives no probes."""
    try:
        kind = get_kind(connection)
    except ConfigurationError:
        return []
    if not kind.field_mappings:
        return []
    samples: list[tuple[str, list[Record]]] = []
    errors: dict[str, str] = {}
    try:
        client = kind.client()
    except ConfigurationError as exc:
        return probe_mappings(kind, [], {"configuration": str(exc)})
    try:
        for stream in kind.streams:
            try:
                page = next(iter(stream.pages(client, {}, True)), None)
            except (UpstreamError, ConfigurationError) as exc:
                errors[stream.name] = str(exc)
                continue
            samples.append((stream.name, list(page.records) if page else []))
            if all(not p.reason for p in probe_mappings(kind, samples)):
                break
    finally:
        client.close()
    return probe_mappings(kind, samples, errors)
