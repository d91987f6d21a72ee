"""The escalation event log is append-only in the database, like the audit table."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.db.utils import DatabaseError
from django.utils import timezone

from apps.escalations.models import Escalation, EscalationEvent
from apps.escalations.tests.helpers import make_escalation

pytestmark = pytest.mark.django_db


@pytest.fixture
def event():
    escalation = make_escalation()
    return EscalationEvent.objects.create(
        escalation=escalation, kind="opened", actor="system", via="system", created_at=timezone.now()
    )


def _refused(sql: str, params: list | None = None) -> str:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks in the way of TRUNCATE
        cursor.execute("SET LOCAL fulcrum.allow_truncate = off")
        cursor.execute(sql, params)
    return str(caught.value)


def test_events_cannot_be_updated(event):
    with pytest.raises(DatabaseError, match="append-only: UPDATE refused"), transaction.atomic():
        EscalationEvent.objects.filter(pk=event.pk).update(note="rewritten")


def test_events_cannot_be_deleted(event):
    with pytest.raises(DatabaseError, match="append-only: DELETE refused"), transaction.atomic():
        EscalationEvent.objects.filter(pk=event.pk).delete()


def test_events_cannot_be_truncated(event):
    # CASCADE: digest items reference events, and without it PostgreSQL refuses before any trigger runs.
    assert "TRUNCATE refused" in _refused("TRUNCATE escalations_escalationevent CASCADE")


def test_an_escalation_with_events_cannot_be_deleted(event):
    with pytest.raises(ProtectedError):
        Escalation.objects.filter(pk=event.escalation_id).delete()


def test_events_can_still_be_added(event):
    EscalationEvent.objects.create(
        escalation=event.escalation, kind="note", actor="system", via="system", created_at=timezone.now()
    )
    assert event.escalation.events.count() == 2
