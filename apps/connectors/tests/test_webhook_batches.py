"""A burst of webhook deliveries drained in batches: one task claims the deliveries of its connection that
wait untouched, reads their records upstream together and applies them in one transaction, a savepoint
each, with one marking for the rules. Each delivery keeps its own claim, attempt, fence, failure and retry.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client as HttpClient

from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.services import sync_stream
from apps.connectors.webhooks import processing, tasks
from apps.connectors.webhooks.processing import process_deliveries, process_delivery, sweep
from apps.entities.models import ChangeOrder
from apps.simulator import Company, SimulatorServer
from apps.simulator.webhooks import change_record, event_for, procore_delivery

from .test_webhooks import accept

PROCORE_AUTH = "Bearer procore-hook-credential"
QUERIES_FIXED = 19  # the claim, the rows, the fence, linking, marking, processed marks: once a batch
QUERIES_PER_DELIVERY = 3  # its savepoint (2) and its upsert (one alone: 19)
Status = WebhookDelivery.Status


@pytest.fixture
def pm(connections: dict[str, Connection], rule_calls: list[Any]) -> Connection:
    """The Procore connection with its webhook credential, its change orders synced."""
    pm = connections["pm"]
    pm.webhook_secrets = [PROCORE_AUTH]
    pm.options = {**pm.options, "rate_budget": False}
    pm.save()
    sync_stream(connection=pm, stream="change_orders")
    rule_calls.clear()
    return pm


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Task messages sent (args and options), recorded instead of sent to the broker."""
    sent: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(
        tasks.process_webhook_delivery, "apply_async", lambda *args, **kw: sent.append((args, kw))
    )
    return sent


def edited(company: Company, client: HttpClient, count: int, offset: int = 0) -> list[tuple[int, int]]:
    """``count`` change orders edited upstream, each announced by its own delivery: (delivery id, co id)."""
    made = []
    for n, target in enumerate(sorted(company.pc_change_orders)[offset : offset + count]):
        record = change_record(company, "procore", "change_order", target, grand_total=900_000_00 + n)
        delivery = accept(
            client, "pm", *procore_delivery(PROCORE_AUTH, event_for("procore", "change_order", record))
        )
        made.append((delivery, target))
    return made


def amount(pm: Connection, target: int) -> Decimal:
    return ChangeOrder.objects.get(source=pm, external_id=str(target)).amount


def test_one_task_applies_a_burst_with_one_marking(
    pm: Connection,
    company: Company,
    client: HttpClient,
    simulator: SimulatorServer,
    rule_calls: Any,
    queued: list[Any],
) -> None:
    burst = edited(company, client, 5)
    ids = [delivery for delivery, _ in burst]
    simulator.requests_log.clear()

    result = tasks.process_webhook_delivery.apply(args=(ids[0],))

    assert result.get().endswith("(+4 in its batch)")
    rows = WebhookDelivery.objects.filter(pk__in=ids)
    assert {(row.status, row.attempts) for row in rows} == {(Status.PROCESSED, 1)}
    assert all(row.summary["changed"] == 1 for row in rows)
    for n, (_, target) in enumerate(burst):
        assert amount(pm, target) == Decimal(900_000_00 + n) / 100
    [(changes, trigger)] = rule_calls  # one marking for the five
    assert trigger == "webhook"
    # Their coalescing window starts when the first of them arrived, not when the batch was applied.
    assert rule_calls.since == [min(row.received_at for row in rows)]
    assert changes["change_order"] == set(
        ChangeOrder.objects.filter(source=pm, external_id__in=[str(t) for _, t in burst]).values_list(
            "pk", flat=True
        )
    )
    projects = {company.pc_change_orders[target].project_id for _, target in burst}
    assert len(simulator.requests_log) == len(projects)  # one read per project, not one per delivery
    assert queued == []
    # Their own messages find them taken.
    assert all(process_delivery(delivery).status == "skipped" for delivery in ids[1:])


def test_a_bad_delivery_among_good_ones_fails_alone_and_is_retried(
    pm: Connection,
    company: Company,
    client: HttpClient,
    monkeypatch: pytest.MonkeyPatch,
    queued: list[Any],
) -> None:
    burst = edited(company, client, 4)
    bad_delivery, bad_target = burst[2]
    apply = processing._apply

    def apply_or_break(connection: Connection, stream: Any, hints: list[Any], *args: Any) -> set[int]:
        changed = apply(connection, stream, hints, *args)  # written, then the savepoint is rolled back
        if any(hint.external_id == str(bad_target) for hint in hints):
            raise RuntimeError("this one breaks")
        return changed

    monkeypatch.setattr(processing, "_apply", apply_or_break)
    before = amount(pm, bad_target)

    outcomes = process_deliveries(burst[0][0])

    assert {pk: o.status for pk, o in outcomes.items()} == {
        pk: "failed" if pk == bad_delivery else "processed" for pk, _ in burst
    }
    assert outcomes[bad_delivery].retry
    bad = WebhookDelivery.objects.get(pk=bad_delivery)
    assert bad.status == Status.FAILED and bad.attempts == 1 and "this one breaks" in bad.error
    assert amount(pm, bad_target) == before  # its savepoint rolled back
    assert all(
        amount(pm, target) == Decimal(900_000_00 + n) / 100 for n, (_, target) in enumerate(burst) if n != 2
    )

    # The task queues the mate's retry as its own task would have; a retry is then processed alone.
    tasks._follow_up(bad_delivery, outcomes[bad_delivery])
    [((args, *_), options)] = queued
    assert args == (bad_delivery,) and options["retries"] == 1 and 0 <= options["countdown"] <= 1
    monkeypatch.setattr(processing, "_apply", apply)
    fresh = edited(company, client, 1, offset=10)
    assert set(process_deliveries(bad_delivery)) == {bad_delivery}  # the fresh one is not taken along
    assert WebhookDelivery.objects.get(pk=bad_delivery).status == Status.PROCESSED
    assert WebhookDelivery.objects.get(pk=fresh[0][0]).status == Status.RECEIVED


def test_a_lease_lost_mid_batch_rolls_back_that_delivery_only(
    pm: Connection, company: Company, client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = edited(company, client, 3)
    lost_delivery, lost_target = burst[1]
    fetch = processing._fetch

    def fetch_then_stall(*args: Any) -> Any:
        fetched = fetch(*args)
        # While this worker waited, the sweeper presumed it lost and a newer attempt claimed the row.
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        WebhookDelivery.objects.filter(pk=lost_delivery).update(status_changed_at=long_ago)
        assert sweep() == [lost_delivery]
        assert processing.claim(lost_delivery) is not None
        return fetched

    monkeypatch.setattr(processing, "_fetch", fetch_then_stall)
    before = amount(pm, lost_target)

    outcomes = process_deliveries(burst[0][0])

    assert outcomes[lost_delivery].status == "skipped" and "lease lost" in outcomes[lost_delivery].error
    assert amount(pm, lost_target) == before  # not applied by the overtaken holder
    row = WebhookDelivery.objects.get(pk=lost_delivery)
    assert row.status == Status.PROCESSING and row.attempts == 2  # the newer attempt's
    for n in (0, 2):
        pk, target = burst[n]
        assert outcomes[pk].status == "processed"
        assert WebhookDelivery.objects.get(pk=pk).status == Status.PROCESSED
        assert amount(pm, target) == Decimal(900_000_00 + n) / 100
    monkeypatch.setattr(processing, "_fetch", fetch)
    processing._process(row)  # the newer holder applies it once
    assert WebhookDelivery.objects.get(pk=lost_delivery).status == Status.PROCESSED
    assert amount(pm, lost_target) == Decimal(900_000_00 + 1) / 100


def test_a_failed_marking_falls_back_to_one_by_one(
    pm: Connection, company: Company, client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = edited(company, client, 3)
    publish = processing.entities_changed_publish

    def refuse_batches(changes: dict[str, set[int]], **kwargs: Any) -> Any:
        if len(changes.get("change_order", ())) > 1:
            raise RuntimeError("linking a batch failed")
        return publish(changes, **kwargs)

    monkeypatch.setattr(processing, "entities_changed_publish", refuse_batches)

    outcomes = process_deliveries(burst[0][0])

    assert {o.status for o in outcomes.values()} == {"processed"} and len(outcomes) == 3
    assert {(r.status, r.attempts) for r in WebhookDelivery.objects.all()} == {(Status.PROCESSED, 1)}
    for n, (_, target) in enumerate(burst):
        assert amount(pm, target) == Decimal(900_000_00 + n) / 100


def test_a_spent_budget_defers_the_whole_batch_without_spending_attempts(
    pm: Connection, company: Company, client: HttpClient, queued: list[Any]
) -> None:
    from apps.connectors.kinds import get_kind
    from apps.connectors.ratelimit import RateBudget, redis_client

    pm.options = {**pm.options, "rate_budget": {"calls": 1, "seconds": 60}}
    pm.save()
    budget = get_kind(pm).rate_budget()
    assert isinstance(budget, RateBudget)
    redis_client(budget.url).delete(budget.key, budget.hold_key)
    budget()  # the only call of this window
    burst = edited(company, client, 3)
    ids = [pk for pk, _ in burst]

    result = tasks.process_webhook_delivery.apply(args=(ids[0],))

    assert "deferred" in result.get()
    rows = WebhookDelivery.objects.filter(pk__in=ids)
    assert {(r.status, r.attempts) for r in rows} == {(Status.RECEIVED, 0)}
    assert sorted(args for (args, _kwargs), _options in queued) == [(pk,) for pk in ids]
    for (_args, kwargs), options in queued:
        assert kwargs == {"deferrals": 1} and 50 < options["countdown"] <= 60


def test_a_batch_takes_only_untouched_deliveries_of_its_connection(
    pm: Connection, company: Company, client: HttpClient
) -> None:
    burst = edited(company, client, 4)
    deferred, requeued = burst[1][0], burst[2][0]
    WebhookDelivery.objects.filter(pk=deferred).update(error="deferred 30.0 s: rate budget spent")
    WebhookDelivery.objects.filter(pk=requeued).update(error="worker lost: no result after 30 s")

    claimed = processing.claim_batch(burst[0][0], limit=10)

    assert [d.pk for d in claimed] == [burst[0][0], burst[3][0]]
    assert processing.claim_batch(burst[0][0], limit=10) == []  # nothing left untouched, its own taken


def test_a_batch_costs_a_few_queries_per_delivery(
    pm: Connection, company: Company, client: HttpClient, django_assert_max_num_queries: Any
) -> None:
    small = [pk for pk, _ in edited(company, client, 2)]
    with django_assert_max_num_queries(QUERIES_FIXED + QUERIES_PER_DELIVERY * 2):
        assert {o.status for o in process_deliveries(small[0]).values()} == {"processed"}
    large = [pk for pk, _ in edited(company, client, 12, offset=20)]

    # 25 for two, 55 for twelve: a delivery alone costs 19.
    with django_assert_max_num_queries(QUERIES_FIXED + QUERIES_PER_DELIVERY * 12):
        assert {o.status for o in process_deliveries(large[0]).values()} == {"processed"}
