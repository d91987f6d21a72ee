"""The connections file: idempotent import by slug, export without secrets, secrets never in the clear."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from django.db import connection as db_connection
from django_celery_beat.models import PeriodicTask

from apps.audit.models import AuditEntry
from apps.connectors.models import Connection
from apps.connectors.services import ConnectionFileError, connection_export, connection_import

TOKEN = "tok-9f8e7d6c5b4a"
SECRET = "whsec-1a2b3c4d5e"

FILE: list[dict[str, Any]] = [
    {
        "slug": "crm",
        "kind": "hubspot",
        "base_url": "http://127.0.0.1:8701",
        "credentials": {"access_token": TOKEN},
        "webhook_secret": SECRET,
        "schedule": "*/15 * * * *",
        "options": {},
    },
    {
        "slug": "pm",
        "kind": "procore",
        "base_url": "https://api.procore.example",
        "credentials": {"access_token": "p"},
        "schedule": "",
        "options": {"company_id": 4242},
    },
]


def test_import_stores_secrets_encrypted_and_audits_without_them(db: None) -> None:
    imported = connection_import(data=copy.deepcopy(FILE), actor="system:test")

    crm = Connection.objects.get(slug="crm")
    assert [c.slug for c in imported] == ["crm", "pm"]
    assert crm.credentials == {"access_token": TOKEN} and crm.webhook_secrets == [SECRET]
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT credentials_encrypted, webhook_secret_encrypted FROM connectors_connection")
        stored = json.dumps(cursor.fetchall())
    assert TOKEN not in stored and SECRET not in stored
    entries = list(AuditEntry.objects.filter(object_type="connection").order_by("id"))
    assert [e.action for e in entries] == ["connection.created", "connection.created"]
    assert entries[0].actor == "system:test" and entries[0].object_id == str(crm.pk)
    assert "credentials" in entries[0].data["fields"]
    dumped = json.dumps([e.data for e in entries])
    assert TOKEN not in dumped and SECRET not in dumped


def test_import_is_idempotent_by_slug_and_audits_only_changes(db: None) -> None:
    connection_import(data=copy.deepcopy(FILE), actor="system:test")
    connection_import(data=copy.deepcopy(FILE), actor="system:test")
    assert Connection.objects.count() == 2
    assert AuditEntry.objects.filter(object_type="connection").count() == 2

    changed = copy.deepcopy(FILE)
    changed[0]["schedule"] = "0 * * * *"
    changed[0]["credentials"] = {"access_token": "rotated"}
    connection_import(data=changed, actor="system:test")

    update = AuditEntry.objects.filter(action="connection.updated").get()
    assert update.data["fields"] == ["schedule", "credentials"] and "rotated" not in json.dumps(update.data)
    assert Connection.objects.get(slug="crm").credentials == {"access_token": "rotated"}


def test_export_round_trips_without_secrets_and_reimport_keeps_them(db: None) -> None:
    connection_import(data=copy.deepcopy(FILE), actor="system:test")

    exported = connection_export()

    assert TOKEN not in json.dumps(exported) and SECRET not in json.dumps(exported)
    assert all("credentials" not in item and "webhook_secret" not in item for item in exported)
    assert exported == [
        {k: v for k, v in item.items() if k not in ("credentials", "webhook_secret")} for item in FILE
    ]
    connection_import(data=exported, actor="system:test")
    crm = Connection.objects.get(slug="crm")
    assert crm.credentials == {"access_token": TOKEN} and crm.webhook_secrets == [SECRET]
    assert AuditEntry.objects.filter(action="connection.updated").count() == 0


def test_a_schedule_becomes_a_beat_entry(db: None) -> None:
    connection_import(data=copy.deepcopy(FILE), actor="system:test")

    task = PeriodicTask.objects.get(name="sync connection crm")
    assert task.task == "apps.connectors.tasks.sync_connection_task" and task.enabled
    assert json.loads(task.args) == [Connection.objects.get(slug="crm").pk]
    assert (task.crontab.minute, task.crontab.hour) == ("*/15", "*")
    assert not PeriodicTask.objects.filter(name="sync connection pm").exists()


def test_every_problem_in_a_file_is_reported_and_nothing_is_imported(db: None) -> None:
    bad = [
        {"slug": "ok", "kind": "hubspot", "base_url": "http://x.example", "credential": {}},
        {"slug": "Bad Slug", "kind": "sap", "base_url": "ftp://x", "schedule": "*/15 * * *"},
        {"slug": "ok", "kind": "procore", "base_url": "http://x.example", "schedule": "99 * * * *"},
    ]
    with pytest.raises(ConnectionFileError) as caught:
        connection_import(data=bad, actor="system:test")

    errors = caught.value.errors
    assert errors == [
        "item 1 (ok): unknown field 'credential'",
        "item 2 (Bad Slug): slug must be 1-50 letters, digits, '-' or '_'",
        "item 2 (Bad Slug): kind 'sap' is not one of csv, docai, hubspot, procore, quickbooks, rest",
        "item 2 (Bad Slug): base_url 'ftp://x' is not an http(s) URL",
        "item 2 (Bad Slug): schedule '*/15 * * *': "
        "needs five fields: minute hour day-of-month month day-of-week",
        "item 3 (ok): slug 'ok' appears twice",
        "item 3 (ok): schedule '99 * * * *': Invalid end range: 99 > 59.",
    ]
    assert not Connection.objects.exists()
