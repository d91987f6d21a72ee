"""A sync's changes are linked and marked for evaluation even when the process publishing them dies.

A sync commits page by page, then links what it stored and marks the subjects that depend on it
(``entities_changed_publish``). Whatever stops it between the two (a worker killed, a deadlock in the
links) must not leave stored records that the rules never evaluate: the next sync of the connection
publishes them, from the runs still unpublished.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

import apps.connectors.services as services
import apps.entities.changes as changes_module
from apps.connectors.models import Connection, SyncRun
from apps.connectors.operations import connection_reconcile
from apps.connectors.services import sync_connection
from apps.entities.models import ChangeOrder, Project
from apps.rules.models import PendingEvaluation
from apps.simulator import Company, SimulatorServer

from .conftest import Cycle


def _pending(subject_type: str) -> set[int]:
    return set(
        PendingEvaluation.objects.filter(subject_type=subject_type).values_list("subject_id", flat=True)
    )


def _live(model: Any, connection: Connection) -> set[int]:
    return set(model.objects.filter(source=connection, deleted_at__isnull=True).values_list("pk", flat=True))


def test_a_sync_that_died_before_publishing_is_published_by_the_next(
    connections: dict[str, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = connections["pm"]

    def killed(*_: Any, **__: Any) -> None:
        raise RuntimeError("worker killed after its pages were committed")

    with monkeypatch.context() as patch:
        patch.setattr(services, "entities_changed_publish", killed)
        with pytest.raises(RuntimeError):
            sync_connection(connection=pm)
    stored = _live(ChangeOrder, pm)
    assert stored and not _pending("change_order")  # stored, never marked
    assert SyncRun.objects.filter(connection=pm, published_at__isnull=True).count() == 5

    runs = sync_connection(connection=pm)  # incremental: upstream has nothing new since the cursors

    assert all(run.counts["inserted"] == 0 for run in runs)
    assert stored <= _pending("change_order")
    assert _live(Project, pm) <= _pending("project")
    assert not SyncRun.objects.filter(connection=pm, published_at__isnull=True).exists()
    PendingEvaluation.objects.all().delete()
    sync_connection(connection=pm)  # published once: the next run does not mark them again
    assert not _pending("change_order")


def test_other_errors_while_publishing_are_not_retried(
    connections: dict[str, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = connections["pm"]
    calls: list[int] = []

    def broken(*_: Any, **__: Any) -> dict[str, int]:
        calls.append(1)
        raise OperationalError("the server closed the connection")

    monkeypatch.setattr(changes_module, "link_entities", broken)
    with pytest.raises(OperationalError):
        sync_connection(connection=pm)
    assert len(calls) == 1
    assert SyncRun.objects.filter(connection=pm, published_at__isnull=True).count() == 5


def test_tombstones_of_a_sweep_that_died_before_publishing_are_published_by_the_next_sync(
    connections: dict[str, Connection], company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = connections["pm"]
    sync_connection(connection=pm)
    gone = sorted(company.pc_change_orders)[0]
    company.delete("procore", "change_order", gone)
    PendingEvaluation.objects.all().delete()

    def killed(*_: Any, **__: Any) -> None:
        raise RuntimeError("worker killed after the tombstones were committed")

    with monkeypatch.context() as patch:
        patch.setattr(services, "entities_changed_publish", killed)
        with pytest.raises(RuntimeError):
            connection_reconcile(connection=pm, streams=["change_orders"])
    [tombstoned] = ChangeOrder.objects.filter(source=pm, external_id=str(gone), deleted_at__isnull=False)
    assert not _pending("change_order")

    sync_connection(connection=pm)

    assert tombstoned.pk in _pending("change_order")
    assert not SyncRun.objects.filter(connection=pm, published_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_deadlock_while_publishing_is_tried_again_and_publishes(
    simulator: SimulatorServer,
    fast_http: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A webhook's transaction holds a change order's mark and then updates the change order, while a
    sync's publish has linked that change order and waits for the mark: PostgreSQL ends the publish's
    transaction (it detects the cycle first), which is then run again and publishes."""
    from apps.connectors.services import changes_publish, connection_import
    from apps.rules.evaluation import triggers

    from .conftest import connection_file

    monkeypatch.setattr(triggers, "flush_soon", lambda **_: None)  # no flush queued on the broker
    pm = {c.slug: c for c in connection_import(data=connection_file(simulator.base_url), actor="t")}["pm"]
    sync_connection(connection=pm)
    co = ChangeOrder.objects.filter(source=pm, project__isnull=False).first()
    assert co is not None
    ChangeOrder.objects.filter(pk=co.pk).update(project=None)  # the publish's link will set it again
    PendingEvaluation.objects.all().delete()
    PendingEvaluation.objects.create(
        subject_type="change_order", subject_id=co.pk, trigger="webhook", queued_at=timezone.now()
    )
    with (
        Cycle(
            hold=("SELECT 1 FROM rules_pendingevaluation WHERE subject_id = %s FOR UPDATE", [co.pk]),
            waits_in="rules_pendingevaluation",
            close=("UPDATE entities_changeorder SET title = title WHERE id = %s", [co.pk]),
        ),
        caplog.at_level(logging.WARNING, logger="apps.connectors.services"),
    ):
        changes_publish(pm, [], {"change_order": {co.pk}})

    assert "deadlock detected" in caplog.text and "trying again" in caplog.text
    co.refresh_from_db()
    assert co.project_id is not None  # linked by the publish run again
    assert co.pk in _pending("change_order")
