"""The ``rest`` kind's options, parsed and validated into typed values with every problem named at once.

``options`` of a rest connection::

    {"streams": [{
        "name": "projects",                 # unique per connection; the stream's name in runs and cursors
        "entity": "project",                # which entity table it loads (see ENTITIES)
        "path": "/api/projects",            # relative to base_url
        "pagination": {"style": "cursor",   # cursor | page | offset | link
                       "page_size": 100, "page_size_param": "limit",
                       "cursor_param": "cursor", "next_cursor_path": "next_cursor",   # cursor style
                       "page_param": "page", "offset_param": "offset"},               # page/link, offset
        "updated_since_param": "updated_since",   # optional: without it every run reads everything
        "records_path": "data",             # dotted path to the list; "" when the body is the list
        "id_path": "id", "updated_at_path": "meta.updated_at",
        "fields": {"name": "attributes.title", "number": "attributes.code"},  # entity field -> dotted path
        "detail_path": "/api/projects/{id}",  # optional: one record by id, for id-only webhooks
        "detail_record_path": ""            # dotted path to the record in that answer; "" = the body
    }]}

The endpoint must list oldest first by update time when ``updated_since`` is given (the cursor saved per page
is the last record's time; a lookback re-reads the boundary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models

from apps.connectors.kinds.base import ConfigurationError
from apps.entities.models import (
    ChangeOrder,
    Client,
    CrmOwner,
    Document,
    FinancialLine,
    Milestone,
    Project,
    Submittal,
    Vendor,
)

ENTITIES: dict[str, type[models.Model]] = {
    "client": Client,
    "project": Project,
    "vendor": Vendor,
    "milestone": Milestone,
    "change_order": ChangeOrder,
    "submittal": Submittal,
    "financial_line": FinancialLine,
    "crm_owner": CrmOwner,
    "document": Document,  # documents an AI tool processed (SPEC "AI tools as sources")
}
STYLES = ("cursor", "page", "offset", "link")
# Fields the loader keeps for itself, or that the stream's id / updated_at paths provide.
RESERVED = frozenset(
    {"id", "source", "external_id", "source_updated_at", "content_hash", "synced_at", "deleted_at"}
)
STREAM_KEYS = frozenset(
    {
        "name",
        "entity",
        "path",
        "pagination",
        "updated_since_param",
        "records_path",
        "id_path",
        "updated_at_path",
        "fields",
        "detail_path",
        "detail_record_path",
    }
)
PAGINATION_KEYS = frozenset(
    {
        "style",
        "page_size",
        "page_size_param",
        "cursor_param",
        "next_cursor_path",
        "page_param",
        "offset_param",
    }
)
MAX_PAGE_SIZE = 1000
# Foreign keys that linking sets from the *_ref fields, never mapped directly.
RELATIONS = frozenset(
    {"project", "client", "owner", "vendor", "user", "merged_into", "change_order", "invoice", "link_method"}
)


@dataclass(frozen=True)
class Pagination:
    style: str
    page_size: int = 100
    page_size_param: str = ""
    cursor_param: str = "cursor"
    next_cursor_path: str = "next_cursor"
    page_param: str = "page"
    offset_param: str = "offset"

    @property
    def size_param(self) -> str:
        if self.page_size_param:
            return self.page_size_param
        return "per_page" if self.style in ("page", "link") else "limit"


@dataclass(frozen=True)
class StreamConfig:
    name: str
    entity: str
    path: str
    pagination: Pagination
    fields: dict[str, str]
    updated_since_param: str = ""
    records_path: str = "data"
    id_path: str = "id"
    updated_at_path: str = "updated_at"
    detail_path: str = ""
    detail_record_path: str = ""
    model: type[models.Model] = field(default=Project, compare=False)


def _text(value: Any, where: str, errors: list[str], *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        errors.append(f"{where} must be a {'' if allow_empty else 'non-empty '}string")
        return ""
    return value.strip()


def _pagination(raw: Any, where: str, errors: list[str]) -> Pagination:
    if not isinstance(raw, dict):
        errors.append(f"{where}.pagination must be a mapping with a style ({' / '.join(STYLES)})")
        return Pagination("page")
    errors += [f"{where}.pagination: unknown key {key!r}" for key in sorted(set(raw) - PAGINATION_KEYS)]
    style = raw.get("style")
    if style not in STYLES:
        errors.append(f"{where}.pagination.style {style!r} is not one of {', '.join(STYLES)}")
        style = "page"
    size = raw.get("page_size", 100)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_PAGE_SIZE:
        errors.append(f"{where}.pagination.page_size must be an integer from 1 to {MAX_PAGE_SIZE}")
        size = 100
    texts = {
        key: _text(raw[key], f"{where}.pagination.{key}", errors)
        for key in PAGINATION_KEYS - {"style", "page_size"}
        if key in raw
    }
    return Pagination(style=style, page_size=size, **texts)


def _stream(index: int, raw: Any, seen: set[str], errors: list[str]) -> StreamConfig | None:
    where = f"options.streams[{index}]"
    if not isinstance(raw, dict):
        errors.append(f"{where} must be a mapping")
        return None
    errors += [f"{where}: unknown key {key!r}" for key in sorted(set(raw) - STREAM_KEYS)]
    name = _text(raw.get("name"), f"{where}.name", errors)
    if name in seen:
        errors.append(f"{where}.name {name!r} appears twice")
    seen.add(name)
    where = f"options.streams[{index}] ({name or '?'})"
    entity = raw.get("entity")
    model = ENTITIES.get(entity) if isinstance(entity, str) else None
    if model is None:
        errors.append(f"{where}.entity {entity!r} is not one of {', '.join(sorted(ENTITIES))}")
    path = _text(raw.get("path"), f"{where}.path", errors)
    pagination = _pagination(raw.get("pagination"), where, errors)
    mapping = raw.get("fields")
    fields: dict[str, str] = {}
    if not isinstance(mapping, dict) or not mapping:
        errors.append(f"{where}.fields must map entity fields to dotted paths in the record")
    else:
        known = {f.name for f in model._meta.concrete_fields} if model else set()
        for target, source in mapping.items():
            if target in RESERVED:
                errors.append(f"{where}.fields.{target}: set by id_path / updated_at_path, not mapped")
            elif model is not None and target not in known:
                errors.append(
                    f"{where}.fields.{target}: {model.__name__} has no such field "
                    f"(fields: {', '.join(sorted(known - RESERVED - RELATIONS))})"
                )
            else:
                fields[target] = _text(source, f"{where}.fields.{target}", errors)
    config = StreamConfig(
        name=name,
        entity=str(entity),
        path=path,
        pagination=pagination,
        fields=fields,
        updated_since_param=_text(
            raw.get("updated_since_param", ""), f"{where}.updated_since_param", errors, allow_empty=True
        ),
        records_path=_text(
            raw.get("records_path", "data"), f"{where}.records_path", errors, allow_empty=True
        ),
        id_path=_text(raw.get("id_path", "id"), f"{where}.id_path", errors),
        updated_at_path=_text(raw.get("updated_at_path", "updated_at"), f"{where}.updated_at_path", errors),
        detail_path=_detail_path(raw.get("detail_path", ""), where, errors),
        detail_record_path=_text(
            raw.get("detail_record_path", ""), f"{where}.detail_record_path", errors, allow_empty=True
        ),
        model=model or Project,
    )
    return config


def _detail_path(value: Any, where: str, errors: list[str]) -> str:
    path = _text(value, f"{where}.detail_path", errors, allow_empty=True)
    if path and path.count("{id}") != 1:
        errors.append(f"{where}.detail_path must contain {{id}} once, e.g. /api/projects/{{id}}")
    elif path and ("{" in path.replace("{id}", "") or "}" in path.replace("{id}", "")):
        errors.append(f"{where}.detail_path may contain no braces other than {{id}}")
    return path


def parse_options(options: Any) -> list[StreamConfig]:
    """The streams a rest connection's options describe; ConfigurationError lists every problem found."""
    errors: list[str] = []
    raw_streams = options.get("streams") if isinstance(options, dict) else None
    if not isinstance(raw_streams, list) or not raw_streams:
        raise ConfigurationError("options.streams must be a non-empty list of stream definitions")
    seen: set[str] = set()
    streams = [s for i, raw in enumerate(raw_streams) if (s := _stream(i, raw, seen, errors)) is not None]
    if errors:
        raise ConfigurationError("; ".join(errors))
    return streams


def dig(record: Any, path: str) -> Any:
    """The value at a dotted path (``a.b.0.c``: keys, or list indexes); None when any step is missing."""
    value = record
    for step in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value
