from __future__ import annotations

import json
import logging

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from apps.audit.anchor import (
    anchor_keys,
    anchor_signature,
    anchor_write,
    audit_verify_with_anchor,
    read_anchors,
)
from apps.audit.models import AuditEntry, canonical_json
from apps.audit.services import GENESIS, audit_record, audit_verify
from apps.audit.tasks import anchor_chain

pytestmark = pytest.mark.django_db


@pytest.fixture
def anchor_file(tmp_path, settings):
    path = tmp_path / "nested" / "anchor.log"
    settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_FILE": str(path)}
    return path


def _chain(n: int) -> list[AuditEntry]:
    return [
        audit_record(
            action="test.event", actor="system:test", object_type="thing", object_id=i, data={"i": i}
        )
        for i in range(n)
    ]


def _as_superuser(*statements: tuple[str, list]) -> None:
    """What someone with the database owner's rights can do: switch the append-only trigger off."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entry_append_only")
        for sql, params in statements:
            cursor.execute(sql, params)
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entry_append_only")


def _rewrite_from(entries: list[AuditEntry], index: int, data: dict) -> None:
    """Edit one entry and recompute every hash from there on, so the chain is consistent again."""
    statements = []
    prev = entries[index - 1].hash if index else GENESIS
    for position, entry in enumerate(entries[index:], start=index):
        entry.refresh_from_db()
        if position == index:
            entry.data = data
        entry.prev_hash = prev
        entry.hash = entry.compute_hash()
        statements.append(
            (
                "UPDATE audit_auditentry SET data = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [canonical_json(entry.data), entry.prev_hash, entry.hash, entry.pk],
            )
        )
        prev = entry.hash
    _as_superuser(*statements)


def test_anchor_write_appends_a_json_line_and_logs_it(anchor_file):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("fulcrum.audit.anchor")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        empty = anchor_write()
        entries = _chain(3)
        anchor = anchor_write()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert (empty.last_id, empty.last_hash, empty.count) == (None, GENESIS, 0)
    assert (anchor.last_id, anchor.last_hash, anchor.count) == (entries[-1].pk, entries[-1].hash, 3)
    lines = anchor_file.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1]).keys() >= {"at", "last_id", "last_hash", "count"}
    assert json.loads(lines[1])["last_hash"] == entries[-1].hash
    assert [a.last_id for _, a in read_anchors(anchor_file)] == [None, entries[-1].pk]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert entries[-1].hash in records[1].getMessage()


def test_intact_chain_passes_with_its_anchors(anchor_file):
    _chain(2)
    anchor_write()
    _chain(2)
    anchor_write()
    _chain(1)  # entries after the last anchor are fine
    report = audit_verify_with_anchor()
    assert report.ok and report.checked == 5 and report.anchors_checked == 2


def test_tail_deletion_is_caught_by_the_anchor_only(anchor_file, capsys):
    entries = _chain(6)
    anchor_write()
    _as_superuser(("DELETE FROM audit_auditentry WHERE id >= %s", [entries[4].pk]))
    assert audit_verify().ok  # the chain alone cannot tell
    report = audit_verify_with_anchor()
    assert not report.ok and report.source == "anchor"
    assert f"tail deleted after #{entries[3].pk}" in report.reason
    with pytest.raises(CommandError, match=f"tail deleted after #{entries[3].pk}"):
        call_command("verify_audit")
    call_command("verify_audit", "--no-anchor")
    assert "intact: 4 entries" in capsys.readouterr().out


def test_a_truncated_chain_is_caught(anchor_file):
    _chain(3)
    anchor_write()
    _as_superuser(("DELETE FROM audit_auditentry", []))
    report = audit_verify_with_anchor()
    assert not report.ok
    assert "tail deleted after #0" in report.reason and "empty" in report.reason


def test_a_full_chain_rewrite_is_caught(anchor_file):
    entries = _chain(5)
    anchor_write()
    _rewrite_from(entries, 0, {"i": 0, "note": "history rewritten"})
    assert audit_verify().ok  # every hash recomputed: consistent again
    report = audit_verify_with_anchor()
    assert not report.ok
    assert report.reason.startswith(f"anchored entry #{entries[-1].pk} was rewritten")
    with pytest.raises(CommandError, match=f"anchored entry #{entries[-1].pk} was rewritten"):
        call_command("verify_audit")


def test_the_first_rewritten_anchor_is_named(anchor_file):
    entries = _chain(2)
    anchor_write()
    entries += _chain(2)
    anchor_write()
    _rewrite_from(entries, 1, {"i": "edited"})
    report = audit_verify_with_anchor()
    assert not report.ok and report.broken_id == entries[1].pk
    assert "was rewritten" in report.reason


def test_a_rewritten_tail_after_the_last_anchor_goes_unnoticed_by_design(anchor_file):
    entries = _chain(3)
    anchor_write()
    entries += _chain(2)
    _rewrite_from(entries, 3, {"i": "edited"})
    assert audit_verify_with_anchor().ok  # hence anchoring every few minutes


def test_a_deleted_anchored_entry_within_a_rewritten_chain_is_named(anchor_file):
    entries = _chain(4)
    anchor_write()
    _as_superuser(("DELETE FROM audit_auditentry WHERE id = %s", [entries[3].pk]))
    entries = entries[:3]
    entries += _chain(1)  # the chain goes on past the anchored id
    report = audit_verify_with_anchor()
    assert not report.ok
    assert f"anchored entry #{entries[2].pk + 1} was deleted" in report.reason


def _signed(data: dict) -> str:
    return json.dumps({**data, "sig": anchor_signature(data, anchor_keys()[0])})


def test_anchors_of_another_database_are_ignored(anchor_file):
    _chain(1)
    anchor_write()
    foreign = {"at": "2026-01-01T00:00:00+00:00", "last_id": 10**9, "last_hash": "a" * 64, "count": 10**6}
    with anchor_file.open("a") as handle:
        handle.write(_signed({**foreign, "database": "somewhere_else"}) + "\n")
    assert audit_verify_with_anchor().ok
    with anchor_file.open("a") as handle:
        handle.write(_signed(foreign) + "\n")  # no database: applies to every database
    assert not audit_verify_with_anchor().ok


def test_a_damaged_anchor_file_is_reported(anchor_file):
    _chain(1)
    anchor_write()
    with anchor_file.open("a") as handle:
        handle.write('{"at": "2026-01-01T00:00:00+00:00", "last_id": 3}\n')
    report = audit_verify_with_anchor()
    assert not report.ok and "line 2" in report.reason
    with pytest.raises(CommandError, match="line 2"):
        call_command("verify_audit")


def test_verify_audit_options(anchor_file, tmp_path, capsys):
    _chain(2)
    with pytest.raises(CommandError, match="no anchor file"):
        call_command("verify_audit")
    call_command("verify_audit", "--no-anchor")
    assert "not checked against anchors (--no-anchor)" in capsys.readouterr().out
    call_command("anchor_audit")
    assert "anchored #" in capsys.readouterr().out
    call_command("verify_audit")
    assert "intact: 2 entries; 1 anchors hold" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no anchor file at"):
        call_command("verify_audit", "--anchor", str(tmp_path / "missing.log"))
    other = tmp_path / "other.log"
    anchor_write(path=other)
    call_command("verify_audit", "--anchor", str(other))
    assert f"1 anchors hold ({other})" in capsys.readouterr().out


def test_anchor_chain_task_writes_one_anchor(anchor_file):
    [entry] = _chain(1)
    result = anchor_chain.apply().get()
    assert result["last_id"] == entry.pk and result["count"] == 1
    assert len(anchor_file.read_text().splitlines()) == 1
