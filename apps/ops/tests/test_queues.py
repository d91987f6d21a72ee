"""Sync, evaluation and delivery run on separate Celery queues, so a long sync never delays an email."""

from __future__ import annotations

import pytest

from config.celery import app

ROUTED = {
    "apps.connectors.tasks.sync_connection_task": "sync",
    "apps.connectors.tasks.reconcile_connection_task": "sync",
    "apps.connectors.tasks.rebuild_connection_task": "sync",
    "apps.entities.tasks.resolve_entities_task": "sync",
    "apps.quality.tasks.quality_scan_task": "sync",
    "apps.rules.tasks.evaluate_subjects_task": "evaluation",
    "apps.rules.tasks.evaluate_pending": "evaluation",
    "apps.rules.tasks.evaluate_all": "evaluation",
    "apps.rules.shadow.shadow_evaluate_task": "evaluation",
    "apps.learning.tasks.train_risk_model": "evaluation",
    "apps.escalations.tasks.deliver": "delivery",
    "apps.escalations.tasks.deliver_many": "delivery",
    "apps.escalations.tasks.deliver_due": "delivery",
    "apps.escalations.tasks.apply_policy_step": "delivery",
    "apps.connectors.webhooks.tasks.process_webhook_delivery": "celery",
    "apps.ops.tasks.metrics_snapshot": "celery",
    "apps.dashboard.tasks.heartbeat": "celery",
}


@pytest.mark.parametrize(("task", "queue"), ROUTED.items())
def test_each_task_goes_to_its_queue(task, queue):
    app.loader.import_default_modules()
    assert task in app.tasks, task
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue


def test_a_worker_without_q_consumes_every_queue():
    assert set(app.amqp.queues) == {"celery", "sync", "evaluation", "delivery", "writeback"}


def test_every_registered_task_has_a_queue_of_ours():
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if name.startswith("apps.") and ".tests." not in name]
    assert len(ours) >= 20
    for name in ours:
        assert app.amqp.router.route({}, name)["queue"].name in app.amqp.queues, name


def test_each_queue_has_its_own_routing_key():
    keys = {name: queue.routing_key for name, queue in app.amqp.queues.items()}
    assert keys == {name: name for name in ("celery", "sync", "evaluation", "delivery", "writeback")}


def test_a_routed_message_lands_in_its_queue_only():
    """On the real broker: one message to ``sync`` is one message in ``sync`` and none elsewhere."""
    from apps.connectors.tasks import sync_connection_task

    app.control.purge()
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        sync_connection_task.apply_async(args=(0,))
        lengths = {name: client.llen(name) for name in app.amqp.queues}
    app.control.purge()
    assert lengths == {"celery": 0, "sync": 1, "evaluation": 0, "delivery": 0, "writeback": 0}


def test_every_task_and_every_beat_entry_can_be_sent_with_its_time_limits():
    """Celery refuses to send a task whose soft time limit exceeds its hard one (``apply_async`` raises;
    beat only logs it, so a nightly job would silently never run)."""
    from django.conf import settings

    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if name.startswith("apps.")}
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= set(ours), scheduled - set(ours)
    refused = {
        name: (task.soft_time_limit, task.time_limit)
        for name, task in ours.items()
        if task.soft_time_limit and task.time_limit and task.soft_time_limit > task.time_limit
    }
    assert not refused, refused
