"""The registry of connector kinds: adding a vendor is adding a folder and one line here."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

__all__ = [
    "KINDS",
    "BadRecord",
    "ConfigurationError",
    "ConnectorKind",
    "Page",
    "Stream",
    "UnknownKind",
    "UnknownStream",
    "get_kind",
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
