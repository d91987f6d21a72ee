"""Entries keep their data as the exact canonical JSON text that the hash covers (migration 0003)."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DataError, connection
from django.db.migrations.executor import MigrationExecutor

from apps.audit.models import AuditEntry, canonical_json
from apps.audit.services import GENESIS, audit_record, audit_record_many, audit_verify

pytestmark = pytest.mark.django_db


def _stored_text(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT data FROM audit_auditentry WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def _set_data(pk: int, text: str) -> None:
    # A superuser's edit: the append-only trigger switched off around one UPDATE.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entry_append_only")
        cursor.execute("UPDATE audit_auditentry SET data = %s WHERE id = %s", [text, pk])
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entry_append_only")


def _chain(n: int) -> list[AuditEntry]:
    return audit_record_many(
        [
            {"action": "test.event", "object_id": i, "data": {"i": i, "b": [1.5, "x"], "a": "é"}}
            for i in range(n)
        ],
        actor="system:test",
    )


def test_the_column_holds_the_hashed_text():
    [entry] = _chain(1)
    text = _stored_text(entry.pk)
    assert text == '{"a":"\\u00e9","b":[1.5,"x"],"i":0}' == canonical_json(entry.data)
    content = canonical_json(entry.content())
    assert f'"data":{text},' in content
    assert hashlib.sha256((GENESIS + content).encode()).hexdigest() == entry.hash


@pytest.mark.parametrize(
    "edit",
    [
        '{"a":"\\u00e9","b":[1.5,"x"],"i":7}',  # another value
        '{"a": "\\u00e9", "b": [1.5, "x"], "i": 1}',  # the same value, as jsonb would print it
        '{"i":1,"a":"\\u00e9","b":[1.5,"x"]}',  # the same value, keys in another order
        '{"a":"é","b":[1.5,"x"],"i":1}',  # the same value, unescaped
        "not json at all",
    ],
)
def test_any_change_to_the_stored_text_names_the_entry(edit):
    entries = _chain(3)
    _set_data(entries[1].pk, edit)
    report = audit_verify()
    assert not report.ok and report.broken_id == entries[1].pk and report.checked == 1
    assert report.reason == "content does not match its hash"
    with pytest.raises(CommandError, match=f"#{entries[1].pk}"):
        call_command("verify_audit", "--no-anchor")


def test_json_lookups_work_on_the_text_column():
    audit_record(action="test.a", data={"username": "olivia", "n": 3, "tags": ["x"], "nested": {"k": True}})
    audit_record(action="test.b", data={"username": "maria", "n": 4})
    entries = AuditEntry.objects.order_by("id")
    assert [e.action for e in entries.filter(data__username="olivia")] == ["test.a"]
    assert [e.action for e in entries.filter(data__n__gte=4)] == ["test.b"]
    assert [e.action for e in entries.filter(data__nested__k=True)] == ["test.a"]
    assert [e.action for e in entries.filter(data__has_key="tags")] == ["test.a"]
    assert [e.action for e in entries.filter(data__contains={"username": "maria"})] == ["test.b"]
    assert [e.action for e in entries.filter(data={"username": "maria", "n": 4})] == ["test.b"]
    assert list(entries.filter(data__tags__0="x").values_list("data__username", flat=True)) == ["olivia"]
    assert entries.filter(data__isnull=False).count() == 2


@pytest.mark.parametrize(
    "data",
    [
        {"x": float("nan")},
        {"x": [float("inf")]},
        {"x": "nul \x00 inside"},
        {"x\x00": 1},
        {"x": "lone \ud800 surrogate"},
        {"x": "lone \udc00 surrogate"},
    ],
)
def test_what_jsonb_refuses_is_refused(data):
    # JSON lookups cast the column to jsonb: one such entry would break them for every query.
    with pytest.raises(DataError):
        audit_record(action="test.refused", data=data)
    assert not AuditEntry.objects.exists()


def test_escapes_jsonb_accepts_are_stored():
    data = {"literal": "\\u0000 and \\ud800 typed out", "pair": "\U0001f600", "ctl": "\x01\x1f"}
    entry = audit_record(action="test.escapes", data=data)
    assert AuditEntry.objects.get(pk=entry.pk).data == data == entry.data
    assert AuditEntry.objects.filter(data__pair="\U0001f600").exists()
    assert audit_verify().ok


def test_data_dumped_with_str_reads_back_as_stored():
    import datetime as dt
    from decimal import Decimal

    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    entry = audit_record(action="test.str", data={"amount": Decimal("1.50"), "at": moment, "pair": (1, 2)})
    expected = {"amount": "1.50", "at": "2026-01-02 03:04:05+00:00", "pair": [1, 2]}
    assert entry.data == expected == AuditEntry.objects.get(pk=entry.pk).data
    assert audit_verify().ok


# --- migration 0003 ------------------------------------------------------------------------------------

BEFORE, AFTER = ("audit", "0002_append_only"), ("audit", "0003_data_as_hashed_text_fewer_indexes")


def _migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([target])


def _migrate_everything() -> None:
    """Every app to its latest migration: going back to ``BEFORE`` also unapplies the other apps'
    migrations that depend on audit 0003, and the tests after this one need the whole schema."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _old_entry(cursor, prev: str, object_id: str, stored: str, hashed: str) -> str:
    """An entry as written before 0003: data in jsonb, hashed over its canonical text."""
    created = "2026-11-20T10:00:00.123456+00:00"
    content = (
        f'{{"action":"test.old","actor":"system:old","created_at":"{created}","data":{hashed},'
        f'"object_id":"{object_id}","object_type":"thing"}}'
    )
    digest = hashlib.sha256((prev + content).encode()).hexdigest()
    cursor.execute(
        "INSERT INTO audit_auditentry "
        "(created_at, actor, action, object_type, object_id, data, prev_hash, hash) "
        "VALUES (%s, 'system:old', 'test.old', 'thing', %s, %s::jsonb, %s, %s)",
        [created, object_id, stored, prev, digest],
    )
    return digest


@pytest.mark.django_db(transaction=True)
def test_migration_keeps_old_entries_verifiable_and_edited_ones_caught(monkeypatch):
    import importlib

    migration = importlib.import_module("apps.audit.migrations.0003_data_as_hashed_text_fewer_indexes")
    monkeypatch.setattr(migration, "CHUNK", 2)  # several chunks
    # What the old writer hashed: keys sorted, ASCII escapes, floats as jsonb gives them back.
    hashed = '{"a":"caf\\u00e9","big":10000000000000000,"n":[1,2.5],"zz":{"b":null,"a":true}}'
    hashed = canonical_json(json.loads(hashed))
    stored = '{"zz": {"a": true, "b": null}, "a": "café", "n": [1, 2.5], "big": 1e16}'
    _migrate(BEFORE)
    try:
        with connection.cursor() as cursor:
            prev = GENESIS
            for i in range(5):
                prev = _old_entry(cursor, prev, str(i), stored, hashed)
            # Edited before the migration (the hash no longer matches what the row says).
            cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entry_append_only")
            cursor.execute(
                "UPDATE audit_auditentry SET data = data || '{\"a\": \"edited\"}' WHERE object_id = '3'"
            )
            cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entry_append_only")
        _migrate(AFTER)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'audit_auditentry' ORDER BY indexname"
            )
            indexes = [row[0] for row in cursor.fetchall()]
        assert len(indexes) == 4 and not any("hash" in d or "actor_user" in d for d in indexes)
        entries = list(AuditEntry.objects.order_by("id"))
        assert [_stored_text(e.pk) for e in entries[:3]] == [hashed] * 3
        report = audit_verify()
        assert not report.ok and report.broken_id == entries[3].pk and report.checked == 3
        assert entries[0].data == {"a": "café", "big": 10**16, "n": [1, 2.5], "zz": {"a": True, "b": None}}
        # The migrated chain goes on with new entries.
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entry_append_only")
            cursor.execute("DELETE FROM audit_auditentry WHERE object_id IN ('3', '4')")
            cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entry_append_only")
        audit_record(action="test.new", data={"after": "migration"})
        assert audit_verify().ok and audit_verify().checked == 4
        # And back: jsonb again, and the old verification (canonical text of the jsonb) still agrees.
        _migrate(BEFORE)
        with connection.cursor() as cursor:
            cursor.execute("SELECT data::text, prev_hash, hash FROM audit_auditentry ORDER BY id")
            rows = cursor.fetchall()
        assert len(rows) == 4 and canonical_json(json.loads(rows[0][0])) == hashed
    finally:
        _migrate_everything()
