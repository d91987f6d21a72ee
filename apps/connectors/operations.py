"""Operator actions on a connection beside the sync itself: test it, resync from a date, sweep deleted ids."""

from __future__ import annotations

from dataclasses import dataclass

from apps.audit.services import Actor, audit_record

from .http import UpstreamError
from .kinds import ConfigurationError, get_kind
from .models import Connection


@dataclass(frozen=True)
class StreamProbe:
    """What fetching a stream's first page gave: how many records, or why it failed."""

    stream: str
    records: int | None
    error: str = ""

    def __str__(self) -> str:
        return (
            f"{self.stream}: {self.records} record(s) on the first page"
            if not self.error
            else (f"{self.stream}: {self.error}")
        )


def connection_test(*, connection: Connection, actor: Actor) -> list[StreamProbe]:
    """Fetch the first page of each stream (full read, nothing stored); a configuration error is one probe."""
    try:
        kind = get_kind(connection)
        streams = kind.streams
        client = kind.client()
    except ConfigurationError as exc:
        probes = [StreamProbe("configuration", None, str(exc))]
    else:
        probes = []
        try:
            for stream in streams:
                try:
                    page = next(iter(stream.pages(client, {}, True)), None)
                except (UpstreamError, ConfigurationError) as exc:
                    probes.append(StreamProbe(stream.name, None, str(exc)))
                else:
                    probes.append(StreamProbe(stream.name, len(page.records) if page else 0))
        finally:
            client.close()
    audit_record(
        action="connection.tested",
        actor=actor,
        object_type="connection",
        object_id=connection.slug,
        data={"ok": all(not p.error for p in probes), "streams": [str(p) for p in probes]},
    )
    return probes
