"""Anchors: the chain's latest (id, hash, count) kept outside the audit table.

The hash chain shows an edit or deletion inside the table, but not a chain rewritten from some point
on with every hash recomputed, nor a deleted tail. An anchor written every few minutes to a file (and
to the log, which usually ships elsewhere) pins the chain as it was: a later verification demands
that every anchored entry still exists with its hash and position, and that the chain is at least as
long as the longest anchored one.

Each line of the anchor file is one JSON object::

    {"at": "2026-11-23T22:10:00.000118+00:00", "last_id": 5120, "last_hash": "9f2c…", "count": 5117,
     "database": "fulcrum"}

``database`` scopes the line to the database it was taken from, so one file can serve several
databases (development and its test databases, say) without false alarms.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from .services import GENESIS, ChainReport, Checkpoint, verify_chain

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
        return json.dumps(self.as_dict(), separators=(",", ":"))

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


def anchor_path() -> Path:
    return Path(settings.FULCRUM["AUDIT_ANCHOR_FILE"])


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


def anchor_write(*, now: datetime | None = None, path: str | Path | None = None) -> Anchor:
    """Append the chain's current head to the anchor file (fsynced) and log it on ``fulcrum.audit.anchor``."""
    anchor = current_anchor(now=now)
    target = Path(path) if path is not None else anchor_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    created = not target.exists()
    line = anchor.to_line() + "\n"
    # One write() of one short line to a file opened for appending: concurrent writers do not interleave.
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(target.parent)
    logger.info("audit anchor %s", anchor.to_line(), extra={"audit_anchor": anchor.as_dict()})
    return anchor


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def read_anchors(path: str | Path) -> list[tuple[int, Anchor]]:
    """Every anchor in the file with its line number; raises AnchorFileError on a damaged line."""
    anchors = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                anchors.append((number, Anchor.from_dict(data)))
            except (ValueError, KeyError, TypeError) as exc:
                raise AnchorFileError(f"{path}, line {number}: not a valid anchor ({exc})") from exc
    return anchors


def checkpoints(
    anchors: Iterable[tuple[int, Anchor]], *, path: str | Path, database: str
) -> list[Checkpoint]:
    """Anchors of this database that name an entry (an anchor of an empty chain pins nothing)."""
    points = []
    for number, anchor in anchors:
        if anchor.database not in (None, database) or anchor.last_id is None:
            continue
        label = f"the anchor of {anchor.at.isoformat(timespec='seconds')} ({Path(path).name}, line {number})"
        points.append(Checkpoint(anchor.last_id, anchor.last_hash, anchor.count, label))
    return points


def audit_verify_with_anchor(*, path: str | Path | None = None, batch_size: int = 5000) -> ChainReport:
    """``audit_verify`` plus the anchors in ``path`` (default: the configured anchor file, if it exists).

    A damaged anchor file is itself reported as a problem (``source="anchor"``).
    """
    target = Path(path) if path is not None else anchor_path()
    if path is None and not target.exists():
        return verify_chain(batch_size=batch_size)
    try:
        anchors = read_anchors(target)
    except AnchorFileError as exc:
        return ChainReport(False, 0, None, str(exc), "anchor")
    points = checkpoints(anchors, path=target, database=_database())
    return verify_chain(checkpoints=points, batch_size=batch_size)
