"""Signed anchors (AUDIT_ANCHOR_KEY), their sinks, and what verify_audit refuses (issue 19's probes)."""

from __future__ import annotations

import json
import socket

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.utils import DatabaseError

from apps.audit.anchor import anchor_write, audit_verify_with_anchor
from apps.audit.services import audit_record, audit_verify
from apps.audit.sinks import S3Sink, SyslogSink, sink_from_setting
from apps.audit.tests.test_anchor import _chain, _rewrite_from

pytestmark = pytest.mark.django_db


@pytest.fixture
def anchor_file(tmp_path, settings):
    path = tmp_path / "anchor.log"
    settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_FILE": str(path), "AUDIT_ANCHOR_SINK": ""}
    return path


def test_each_anchor_line_is_signed(anchor_file):
    _chain(2)
    anchor_write()
    data = json.loads(anchor_file.read_text())
    assert data["sig"].startswith("hmac-sha256:") and len(data["sig"]) == len("hmac-sha256:") + 64


def test_a_rewritten_chain_with_an_edited_anchor_hash_fails(anchor_file):
    """The probe: rewrite the chain, then put the new head's hash into the anchor line."""
    entries = _chain(4)
    anchor_write()
    _rewrite_from(entries, 0, {"i": "rewritten"})
    entries[-1].refresh_from_db()
    data = json.loads(anchor_file.read_text())
    data["last_hash"] = entries[-1].hash
    anchor_file.write_text(json.dumps(data) + "\n")
    assert audit_verify().ok
    report = audit_verify_with_anchor()
    assert not report.ok and "signature does not match" in report.reason
    with pytest.raises(CommandError, match="signature does not match"):
        call_command("verify_audit")


def test_an_unsigned_anchor_fails(anchor_file):
    _chain(1)
    anchor_write()
    data = json.loads(anchor_file.read_text())
    del data["sig"]
    anchor_file.write_text(json.dumps(data) + "\n")
    with pytest.raises(CommandError, match="line 1: the anchor is not signed"):
        call_command("verify_audit")


def test_an_anchor_signed_with_another_key_fails_and_rotation_keeps_old_keys(anchor_file, settings):
    _chain(1)
    anchor_write()
    settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_KEYS": ["new-key"]}
    assert "signature does not match" in audit_verify_with_anchor().reason
    settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_KEYS": ["new-key", "dev-only-audit-anchor-key"]}
    assert audit_verify_with_anchor().ok
    anchor_write()  # signed with the new key
    settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_KEYS": ["new-key"]}
    assert "line 1" in audit_verify_with_anchor().reason  # the old line still needs the old key


def test_a_missing_anchor_file_fails_unless_no_anchor(anchor_file, capsys):
    _chain(1)
    with pytest.raises(CommandError, match=f"no anchor file at {anchor_file}"):
        call_command("verify_audit")
    call_command("verify_audit", "--no-anchor")
    assert "intact: 1 entries" in capsys.readouterr().out


def test_an_unreadable_anchor_file_fails(anchor_file):
    _chain(1)
    anchor_file.mkdir()  # a directory where the file should be: reading it fails
    with pytest.raises(CommandError, match="cannot be read"):
        call_command("verify_audit")


def test_a_chain_no_anchor_pins_fails(anchor_file):
    _chain(2)
    anchor_file.write_text("")
    report = audit_verify_with_anchor()
    assert not report.ok and "no anchor of database" in report.reason


def test_a_restored_copy_is_verified_against_the_original_database_name(anchor_file, capsys):
    _chain(2)
    anchor_write()
    data = json.loads(anchor_file.read_text())
    assert data["database"] == connection.settings_dict["NAME"]
    with pytest.raises(CommandError, match="no anchor of database 'fulcrum_restored'"):
        call_command("verify_audit", "--database", "fulcrum_restored")
    call_command("verify_audit", "--database", data["database"])
    assert "1 anchors hold" in capsys.readouterr().out


# --- sinks ---------------------------------------------------------------------------------------------


def test_sink_from_setting():
    assert sink_from_setting("/var/lib/a.log").description == "/var/lib/a.log"
    assert sink_from_setting("file:///var/lib/a.log").description == "/var/lib/a.log"
    s3 = sink_from_setting("s3://bucket/anchors?endpoint_url=http://127.0.0.1:9000&retain_days=30")
    assert isinstance(s3, S3Sink) and (s3.bucket, s3.prefix, s3.retain_days) == ("bucket", "anchors", 30)
    assert isinstance(sink_from_setting("syslog://127.0.0.1:5514"), SyslogSink)
    with pytest.raises(ValueError):
        sink_from_setting("s3://bucket/x?mode=LOOSE")


def test_syslog_sink_sends_the_signed_line_and_cannot_be_read_back(settings, tmp_path):
    _chain(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        port = server.getsockname()[1]
        settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_SINK": f"syslog://127.0.0.1:{port}"}
        anchor = anchor_write()
        datagram = server.recv(65536).decode()
    assert datagram.startswith("<134>")  # local0.info
    assert "fulcrum-audit-anchor {" in datagram and anchor.last_hash in datagram
    with pytest.raises(CommandError, match="cannot be read back"):
        call_command("verify_audit")
    exported = tmp_path / "exported.log"
    exported.write_text(f"Dec  6 03:00:00 host {datagram[5:]}\n")  # as a log store would export it
    call_command("verify_audit", "--anchor", str(exported))


@pytest.fixture
def s3_bucket(monkeypatch):
    moto = pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="anchors", ObjectLockEnabledForBucket=True)
        yield client


def test_s3_sink_writes_locked_objects_and_verifies_from_them(settings, s3_bucket, capsys):
    settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_SINK": "s3://anchors/fulcrum?retain_days=7"}
    entries = _chain(2)
    anchor_write()
    [item] = s3_bucket.list_objects_v2(Bucket="anchors", Prefix="fulcrum/")["Contents"]
    head = s3_bucket.head_object(Bucket="anchors", Key=item["Key"])
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"]
    call_command("verify_audit")
    assert "1 anchors hold (s3://anchors/fulcrum)" in capsys.readouterr().out
    # Locked: not even the bucket's owner can delete this version before the retention date.
    versions = s3_bucket.list_object_versions(Bucket="anchors")["Versions"]
    with pytest.raises(Exception, match="AccessDenied"):
        s3_bucket.delete_object(Bucket="anchors", Key=item["Key"], VersionId=versions[0]["VersionId"])
    _rewrite_from(entries, 0, {"i": "rewritten"})
    with pytest.raises(CommandError, match="was rewritten"):
        call_command("verify_audit")


def test_s3_sink_with_no_anchors_fails(settings, s3_bucket):
    settings.FULCRUM = {**settings.FULCRUM, "AUDIT_ANCHOR_SINK": "s3://anchors/fulcrum"}
    _chain(1)
    with pytest.raises(CommandError, match="no anchors in s3://anchors/fulcrum"):
        call_command("verify_audit")


# --- the database refuses ------------------------------------------------------------------------------


def _refused(sql: str) -> str:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks in the way of TRUNCATE
        cursor.execute("SET LOCAL fulcrum.allow_truncate = off")
        cursor.execute(sql)
    return str(caught.value)


def test_truncate_of_the_audit_table_is_refused():
    audit_record(action="t", actor="system:test", object_type="x", object_id=1, data={})
    assert "audit_auditentry is append-only: TRUNCATE refused" in _refused("TRUNCATE audit_auditentry")
    assert "TRUNCATE refused" in _refused("TRUNCATE audit_auditentry CASCADE")


def test_truncate_bypass_needs_a_test_database_too():
    # The option alone is not enough: a database not named test_* refuses whatever the session says.
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'fulcrum_refuse_truncate'")
        [source] = cursor.fetchone()
    assert "current_database() LIKE 'test\\_%'" in source
