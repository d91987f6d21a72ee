"""Anchors: the chain's latest (id, hash, count) kept outside the audit table, signed.

The hash chain shows an edit or deletion inside the table, but not a chain rewritten from some point
on with every hash recomputed, nor a deleted tail. An anchor written every few minutes to a sink
outside the database (``sinks.py``: a file, an S3 bucket with object lock, syslog) and to the log pins
the chain as it was: a later verification demands that every anchored entry still exists with its hash
and position, and that the chain is at least as long as the longest anchored one.

Each anchor is one JSON object, HMAC-SHA256-signed with ``AUDIT_ANCHOR_KEY`` over its other fields in
canonical JSON (sorted keys, no spaces), so whoever rewrites the chain cannot also edit an anchor to
match::

    {"at": "2026-11-23T22:10:00.000118+00:00", "last_id": 5120, "last_hash": "9f2c…", "count": 5117,
     "database": "fulcrum", "sig": "hmac-sha256:4b1e…"}

``AUDIT_ANCHOR_KEY`` may list several comma-separated keys: the first signs, all verify (rotation).
``database`` scopes the anchor to the database it was taken from, so one sink can serve several
databases (development and its test databases, say); a database restored under another name is
verified with ``verify_audit --database NAME``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from .services import GENESIS, ChainReport, Checkpoint, verify_chain
from .sinks import AnchorSink, AnchorUnavailable, FileSink, sink_from_setting

logger = logging.getLogger("fulcrum.audit.anchor")


@dataclass(frozen=True)
class Anchor:
    at: datetime
    last_id: int | None
    last_hash: str
    count: int
    database: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "at": self.at.isoformat(),
            "last_id": self.last_id,
            "last_hash": self.last_hash,
            "count": self.count,
        }
        if self.database is not None:
            data["database"] = self.database
        return data

    def to_line(self) -> str:
        """The signed JSON line stored in a sink."""
        data = self.as_dict()
        return json.dumps({**data, "sig": anchor_signature(data, anchor_keys()[0])}, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Anchor:
        at = datetime.fromisoformat(data["at"])
        last_id = data["last_id"]
        count = data["count"]
        last_hash = data["last_hash"]
        if last_id is not None and (not isinstance(last_id, int) or isinstance(last_id, bool)):
            raise ValueError("last_id must be an integer or null")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError("count must be a non-negative integer")
        if not isinstance(last_hash, str) or len(last_hash) != 64:
            raise ValueError("last_hash must be 64 hex digits")
        database = data.get("database")
        return cls(at=at, last_id=last_id, last_hash=last_hash, count=count, database=database)


class AnchorFileError(ValueError):
    """A line of the anchor file cannot be read: the file was damaged or edited."""


SIG_PREFIX = "hmac-sha256:"
_decoder = json.JSONDecoder()


def anchor_keys() -> list[bytes]:
    keys = [k.encode() for k in settings.FULCRUM["AUDIT_ANCHOR_KEYS"] if k]
    if not keys:
        raise ValueError("AUDIT_ANCHOR_KEY is empty: anchors cannot be signed or verified")
    return keys


def anchor_signature(data: dict[str, Any], key: bytes) -> str:
    payload = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return SIG_PREFIX + hmac.new(key, payload, hashlib.sha256).hexdigest()


def signature_holds(data: dict[str, Any], signature: object, keys: Sequence[bytes]) -> bool:
    if not isinstance(signature, str):
        return False
    # Every key is tried (no early exit), each comparison in constant time.
    return any([hmac.compare_digest(anchor_signature(data, key), signature) for key in keys])


def anchor_path() -> Path:
    return Path(settings.FULCRUM["AUDIT_ANCHOR_FILE"])


def anchor_sink() -> AnchorSink:
    """``AUDIT_ANCHOR_SINK`` when set, else the anchor file."""
    configured = settings.FULCRUM.get("AUDIT_ANCHOR_SINK") or ""
    return sink_from_setting(configured) if configured else FileSink(anchor_path())


def _database() -> str:
    return str(connection.settings_dict["NAME"])


def current_anchor(*, now: datetime | None = None) -> Anchor:
    """The chain's head as committed right now (one statement, so id, hash and count agree)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, hash, (SELECT count(*) FROM audit_auditentry) FROM audit_auditentry "
            "ORDER BY id DESC LIMIT 1"
        )
        row = cursor.fetchone()
    last_id, last_hash, count = row if row else (None, GENESIS, 0)
    return Anchor(
        at=now or timezone.now(), last_id=last_id, last_hash=last_hash, count=count, database=_database()
    )


def anchor_write(
    *, now: datetime | None = None, path: str | Path | None = None, sink: AnchorSink | None = None
) -> Anchor:
    """Store the chain's current head, signed, in the sink (or the file ``path``) and log it."""
    anchor = current_anchor(now=now)
    target = sink or (FileSink(path) if path is not None else anchor_sink())
    line = anchor.to_line()
    name = f"{anchor.database}/{anchor.at.strftime('%Y%m%dT%H%M%S.%fZ')}-{anchor.last_id or 0}"
    target.write(line, name=name)
    logger.info("audit anchor %s", line, extra={"audit_anchor": anchor.as_dict()})
    return anchor


def parse_anchor_lines(lines: Iterable[tuple[str, str]]) -> list[tuple[str, Anchor]]:
    """Every anchor with its label; raises AnchorFileError on a damaged, unsigned or edited line.

    A line may carry a prefix before its JSON (a syslog header, ``fulcrum-audit-anchor``), as lines
    exported from a log store do.
    """
    keys = anchor_keys()
    anchors = []
    for line, label in lines:
        if not line.strip():
            continue
        try:
            start = line.index("{")
            data, end = _decoder.raw_decode(line, start)
            if line[end:].strip(" \t\r\n\x00"):  # syslog appends a NUL
                raise ValueError("text after the JSON object")
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            signature = data.pop("sig", None)
            anchor = Anchor.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorFileError(f"{label}: not a valid anchor ({exc})") from exc
        if signature is None:
            raise AnchorFileError(f"{label}: the anchor is not signed")
        if not signature_holds(data, signature, keys):
            raise AnchorFileError(f"{label}: the anchor's signature does not match (edited, or another key)")
        anchors.append((label, anchor))
    return anchors


def read_anchors(path: str | Path) -> list[tuple[str, Anchor]]:
    """Every anchor in the file with its label; raises AnchorFileError on a bad line."""
    try:
        lines = FileSink(path).read_lines()
    except AnchorUnavailable as exc:
        raise AnchorFileError(str(exc)) from exc
    return parse_anchor_lines(lines)


def checkpoints(anchors: Iterable[tuple[str, Anchor]], *, database: str) -> list[Checkpoint]:
    """Anchors of this database that name an entry (an anchor of an empty chain pins nothing)."""
    points = []
    for label, anchor in anchors:
        if anchor.database not in (None, database) or anchor.last_id is None:
            continue
        name = f"the anchor of {anchor.at.isoformat(timespec='seconds')} ({label})"
        points.append(Checkpoint(anchor.last_id, anchor.last_hash, anchor.count, name))
    return points


def audit_verify_with_anchor(
    *,
    path: str | Path | None = None,
    sink: AnchorSink | None = None,
    database: str | None = None,
    batch_size: int = 5000,
) -> ChainReport:
    """``verify_chain`` held to the anchors in ``path`` (or ``sink``; default: the configured sink).

    Missing, unreadable, unsigned or edited anchors are a failure (``source="anchor"``), and so is a
    non-empty chain that no anchor of this database (``database``, default: the connection's) pins.
    """
    source = sink or (FileSink(path) if path is not None else anchor_sink())
    database = database or _database()
    try:
        anchors = parse_anchor_lines(source.read_lines())
    except (AnchorUnavailable, AnchorFileError) as exc:
        # A break inside the chain is the more useful first problem to name.
        chain = verify_chain(batch_size=batch_size)
        return chain if not chain.ok else ChainReport(False, chain.checked, None, str(exc), "anchor")
    points = checkpoints(anchors, database=database)
    report = verify_chain(checkpoints=points, batch_size=batch_size)
    if report.ok and not points and report.checked:
        return ChainReport(
            False,
            report.checked,
            None,
            f"no anchor of database {database!r} in {source.description}: the chain is not pinned "
            "(run anchor_audit, pass --database for a restored copy, or --no-anchor)",
            "anchor",
        )
    return report
