"""A webhook's coalescing window counts from its arrival, end to end: a real worker, the simulator over HTTP.

Changes are evaluated in batches: a flush runs a window (``FULCRUM_EVALUATION_COALESCE_SECONDS``) after
the first change of a batch. A change its vendor held up for longer than that (here a Procore rate-limit
window while the worker fetched it) has waited its window already, so it is evaluated as soon as it is
stored, not a further window later. A change that was not held up still waits out its window.
"""

from __future__ import annotations

import datetime as dt

import pytest

from apps.accounts.demo import demo_connections
from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.services import connection_import, sync_connection
from apps.entities.models import ChangeOrder
from apps.orchestration import pipeline
from apps.rules.evaluation import triggers
from apps.rules.evaluation.services import rules_import
from apps.rules.models import Decision, PendingEvaluation
from apps.simulator.webhooks import change_record, event_for, procore_delivery

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WINDOW = 3.0
HELD = 4.5  # the vendor's rate-limit window, longer than the coalescing window
THRESHOLD_CENTS = 500_000_000
RULE = """
- key: big-co
  name: Very large change order
  subject: change_order
  when: {fact: change_order.amount, op: gte, value: 5000000}
  route: executive
  severity: high
  actions: [flag_dashboard]
  cooldown: 7d
  max_fact_age: 7d
"""
PROCORE_AUTH = "demo-procore-authorization"


def _post_edit(client, company, co_id: int) -> WebhookDelivery:
    record = change_record(company, "procore", "change_order", co_id, grand_total=THRESHOLD_CENTS + 100)
    headers, body = procore_delivery(PROCORE_AUTH, event_for("procore", "change_order", record))
    before = set(WebhookDelivery.objects.values_list("pk", flat=True))
    kind, authorization = headers["Content-Type"], headers["Authorization"]
    answer = client.post("/webhooks/pm/", body, content_type=kind, HTTP_AUTHORIZATION=authorization)
    assert answer.status_code in (200, 202), answer.content
    [delivery] = WebhookDelivery.objects.exclude(pk__in=before)
    return delivery


def _decided(co_id: int) -> Decision:
    subject = ChangeOrder.objects.get(source__slug="pm", external_id=str(co_id)).pk
    decision = wait_for(
        lambda: Decision.objects.filter(subject_id=subject, outcome="matched").first(),
        timeout=60,
        interval=0.05,
        message=f"a matched decision for change order {co_id}",
    )
    return decision


def test_a_held_up_webhook_is_evaluated_when_stored_and_a_prompt_one_waits_its_window(
    simulator, start_worker, client
):
    connection_import(data=demo_connections(simulator.base_url), actor="system:test")
    for connection in Connection.objects.order_by("slug"):
        sync_connection(connection=connection)
    rules_import(text=RULE, actor="system:test")
    pipeline.flush_pending()  # what the sync marked, evaluated here: the worker starts with nothing pending
    assert not PendingEvaluation.objects.exists()
    triggers.flush_guards_clear()
    start_worker({"FULCRUM_EVALUATION_COALESCE_SECONDS": str(WINDOW)})
    prompt_co, held_co = sorted(simulator.company.pc_change_orders)[:2]

    # Not held up: stored and applied at once, evaluated at the end of its window.
    delivery = _post_edit(client, simulator.company, prompt_co)
    decision = _decided(prompt_co)
    delivery.refresh_from_db()
    assert delivery.processed_at - delivery.received_at < dt.timedelta(seconds=1)
    assert decision.evaluated_at - delivery.received_at >= dt.timedelta(seconds=WINDOW - 0.1)

    # Held up by the vendor longer than the window: evaluated as soon as it is applied.
    simulator.faults.add("rate_limit", path_prefix="/rest/", window=HELD, count=None)
    delivery = _post_edit(client, simulator.company, held_co)
    decision = _decided(held_co)
    delivery.refresh_from_db()
    assert delivery.processed_at - delivery.received_at >= dt.timedelta(seconds=WINDOW)
    assert decision.evaluated_at - delivery.processed_at < dt.timedelta(seconds=WINDOW - 1)  # not a window on
