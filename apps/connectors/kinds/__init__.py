"""The registry of connector kinds: adding a vendor is adding a folder and one line here (see ``base``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import BadRecord, ConfigurationError, ConnectorKind, Page, Stream, UnknownKind, UnknownStream
from .csv import Csv
from .docai import DocAi
from .hubspot import HubSpot
from .procore import Procore
from .quickbooks import QuickBooks
from .rest import Rest

if TYPE_CHECKING:
    from apps.connectors.models import Connection

KINDS: dict[str, type[ConnectorKind]] = {
    cls.kind: cls for cls in (HubSpot, QuickBooks, Procore, Rest, Csv, DocAi)
}


def _entity_streams() -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for cls in KINDS.values():
        for stream in cls.stream_classes:
            found[stream.entity] = (*found.get(stream.entity, ()), stream.name)
    return found


# Each entity and the names the registered kinds give the streams that load it (``{"client": ("companies",),
# "financial_line": ("invoices", ...)}``): what ``stream_entity`` falls back on for a stream whose
# connection can no longer say (a kind unregistered, options that no longer parse, a stream removed).
ENTITY_STREAMS: dict[str, tuple[str, ...]] = _entity_streams()
_ENTITY_OF_NAME = {name: entity for entity, names in ENTITY_STREAMS.items() for name in names}


def stream_entity(connection: Connection, stream: str, kinds: dict[int, Any] | None = None) -> str | None:
    """The entity ``stream`` of ``connection`` loads: asked of its connector kind (a ``rest`` stream's
    options name it), else from a CSV upload's name (``csv:<entity>``), else from the registered kinds'
    stream names. ``kinds`` caches the kind per connection across calls."""
    kinds = {} if kinds is None else kinds
    try:
        if connection.pk not in kinds:
            kinds[connection.pk] = get_kind(connection)
        return str(kinds[connection.pk].stream(stream).entity)
    except (UnknownKind, UnknownStream, ConfigurationError):
        pass
    if stream.startswith("csv:"):
        return stream.removeprefix("csv:")
    return _ENTITY_OF_NAME.get(stream)


__all__ = [
    "ENTITY_STREAMS",
    "KINDS",
    "BadRecord",
    "ConfigurationError",
    "ConnectorKind",
    "Page",
    "Stream",
    "UnknownKind",
    "UnknownStream",
    "get_kind",
    "stream_entity",
]


def get_kind(connection: Connection) -> ConnectorKind:
    """The kind implementation bound to ``connection``; UnknownKind for kinds not (yet) implemented."""
    try:
        cls = KINDS[connection.kind]
    except KeyError:
        raise UnknownKind(
            f"connection {connection.slug!r}: connector kind {connection.kind!r} is not available "
            f"(available: {', '.join(sorted(KINDS))})"
        ) from None
    return cls(connection)
