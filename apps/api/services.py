"""The API's one write that no other app offers as a service: asking for a connection resync.

Same effect as the admin's "Resync now" action: audit entry now, the sync task queued after commit
(the sync itself never deletes live data before it succeeds).
"""

from __future__ import annotations

from django.db import transaction

from apps.audit.services import Actor, audit_record
from apps.connectors.models import Connection


class ConnectionDisabled(Exception):
    """A disabled connection is not synced; the task would only skip it."""


@transaction.atomic
def connection_resync_request(*, connection: Connection, actor: Actor, full: bool = False) -> None:
    from apps.connectors.tasks import sync_connection_task

    if not connection.enabled:
        raise ConnectionDisabled(f"connection {connection.slug} is disabled")
    audit_record(
        action="connection.resync_requested",
        actor=actor,
        object_type="connection",
        object_id=connection.slug,
        data={"via": "api", "full": full},
    )
    pk = connection.pk
    transaction.on_commit(lambda: sync_connection_task.delay(pk, full))
