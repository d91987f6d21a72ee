from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEntry
from apps.audit.services import GENESIS, audit_record, audit_record_many, audit_verify

pytestmark = pytest.mark.django_db


def _chain(n: int) -> list[AuditEntry]:
    return [
        audit_record(
            action="test.event",
            actor="system:test",
            object_type="thing",
            object_id=i,
            data={"i": i, "amount": "60000.00"},
        )
        for i in range(n)
    ]


def test_entries_chain_to_the_previous_hash():
    first, second, third = _chain(3)
    assert first.prev_hash == GENESIS
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert audit_verify().ok
    assert audit_verify().checked == 3


def test_batch_append_continues_the_chain():
    _chain(2)
    audit_record_many([{"action": "bulk", "data": {"n": n}} for n in range(3)], actor="system:batch")
    report = audit_verify()
    assert report.ok and report.checked == 5


def test_update_and_delete_are_refused_by_the_database():
    [entry] = _chain(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(action="edited")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).delete()


def test_secrets_are_redacted_by_key_name():
    entry = audit_record(
        action="connection.imported",
        data={
            "slug": "crm",
            "credentials": {"access_token": "x"},
            "webhook_secret": "y",
            "nested": {"api_token": "z"},
        },
    )
    assert entry.data == {
        "slug": "crm",
        "credentials": "[redacted]",
        "webhook_secret": "[redacted]",
        "nested": {"api_token": "[redacted]"},
    }


def _tamper(sql: str, params: list) -> None:
    # What an attacker with superuser rights would do: disable the trigger, edit, re-enable.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entry_append_only")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entry_append_only")


def test_verify_names_an_edited_entry():
    entries = _chain(5)
    _tamper(
        "UPDATE audit_auditentry SET data = %s WHERE id = %s", ['{"i": 2, "amount": "1.00"}', entries[2].pk]
    )
    report = audit_verify()
    assert not report.ok
    assert report.broken_id == entries[2].pk
    assert "content" in report.reason
    with pytest.raises(CommandError, match=f"#{entries[2].pk}"):
        call_command("verify_audit")


def test_verify_catches_a_deleted_middle_entry():
    entries = _chain(4)
    _tamper("DELETE FROM audit_auditentry WHERE id = %s", [entries[1].pk])
    report = audit_verify()
    assert not report.ok
    assert report.broken_id == entries[2].pk


def test_verify_audit_command_passes_on_intact_chain(capsys):
    _chain(3)
    call_command("verify_audit", "--no-anchor")
    assert "intact: 3 entries" in capsys.readouterr().out
