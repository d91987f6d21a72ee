"""POST /api/connections/{slug}/resync: audited, and the sync task queued only after commit."""

from __future__ import annotations

from unittest import mock

from apps.audit.models import AuditEntry
from tests.factories import ConnectionFactory


def test_resync_queues_the_sync_after_commit_and_audits(
    as_persona, administrator, django_capture_on_commit_callbacks
):
    conn = ConnectionFactory(slug="crm-main", kind="hubspot")
    api = as_persona("administrator")
    with mock.patch("apps.connectors.tasks.sync_connection_task.delay") as delay:
        with django_capture_on_commit_callbacks() as callbacks:
            response = api.post("/api/connections/crm-main/resync/", {"full": True}, format="json")
        delay.assert_not_called()  # nothing is queued before the transaction commits
        assert len(callbacks) == 1
        callbacks[0]()
    assert response.status_code == 202
    assert response.json() == {"connection": "crm-main", "full": True}
    delay.assert_called_once_with(conn.pk, True)
    entry = AuditEntry.objects.get(action="connection.resync_requested", object_id="crm-main")
    assert entry.data == {"via": "api", "full": True}
    assert entry.actor == "user:avery"


def test_resync_defaults_to_incremental(as_persona, django_capture_on_commit_callbacks):
    conn = ConnectionFactory(slug="books", kind="quickbooks")
    with (
        mock.patch("apps.connectors.tasks.sync_connection_task.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert as_persona("administrator").post("/api/connections/books/resync").status_code == 202
    delay.assert_called_once_with(conn.pk, False)


def test_resync_of_a_disabled_connection_is_a_conflict(as_persona):
    ConnectionFactory(slug="old", kind="csv", enabled=False)
    with mock.patch("apps.connectors.tasks.sync_connection_task.delay") as delay:
        response = as_persona("administrator").post("/api/connections/old/resync", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["message"] == "connection old is disabled"
    delay.assert_not_called()
    assert not AuditEntry.objects.filter(action="connection.resync_requested").exists()


def test_resync_of_an_unknown_connection_is_404(as_persona):
    response = as_persona("administrator").post("/api/connections/nope/resync", {}, format="json")
    assert response.status_code == 404
