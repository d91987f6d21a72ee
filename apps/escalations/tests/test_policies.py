"""Escalation policies under controlled time: business hours, levels, reminders, fencing, auditor."""

from __future__ import annotations

import datetime as dt
import html
import threading
import time
import uuid
import zoneinfo
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core import mail
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.entities.models import ChangeOrder
from apps.escalations.delivery import delivery_attempt
from apps.escalations.models import Delivery, Escalation, EscalationEvent, EscalationPolicy, PolicyLevel
from apps.escalations.policies import (
    BusinessHours,
    policy_audit,
    policy_claim_due,
    policy_release_closed,
    policy_start,
    policy_step_apply,
)
from apps.escalations.services import escalation_acknowledge, escalation_resolve

# The end-to-end fixtures (a real Celery worker on the broker, an aiosmtpd server), for the last test.
from tests.concurrency import run_concurrently
from tests.e2e.conftest import celery_worker, smtp_server, wait_for  # noqa: F401

from .helpers import make_escalation

CHI = zoneinfo.ZoneInfo("America/Chicago")
FRIDAY_16 = dt.datetime(2026, 11, 20, 16, 0, tzinfo=CHI)
MONDAY = dt.date(2026, 11, 23)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=CHI)


def make_policy(*levels: dict, route: str = "executive", start: int = 8, end: int = 17, **extra):
    policy = EscalationPolicy.objects.create(
        name=f"{route or 'default'} policy",
        route=route,
        day_start=start,
        day_end=end,
        timezone="America/Chicago",
        **extra,
    )
    for position, level in enumerate(levels, start=1):
        PolicyLevel.objects.create(policy=policy, position=position, **level)
    return policy


def open_escalation(when: dt.datetime, **extra) -> Escalation:
    with time_machine.travel(when, tick=False):
        escalation = make_escalation(**extra)
        policy_start(escalation=escalation, now=timezone.now())
    escalation.refresh_from_db()
    return escalation


def sweep(when: dt.datetime) -> list[str]:
    """One beat sweep at ``when``, with the queued tasks run in-line."""
    with time_machine.travel(when, tick=False):
        policy_release_closed()
        return [
            policy_step_apply(escalation_id=d.escalation_id, step=d.step, token=d.token)
            for d in policy_claim_due()
        ]


def step_deliveries(escalation: Escalation) -> list[tuple[str, str]]:
    return list(
        Delivery.objects.filter(idempotency_key__startswith=f"esc{escalation.pk}:s")
        .order_by("id")
        .values_list("action", "target")
    )


def policy_events(escalation: Escalation) -> list[str]:
    return list(
        EscalationEvent.objects.filter(escalation=escalation, kind__startswith="policy_").values_list(
            "kind", flat=True
        )
    )


# --- business hours (no database) ---------------------------------------------------------------


def test_friday_afternoon_plus_four_business_hours_is_monday_morning():
    hours = BusinessHours(days=frozenset(range(1, 6)), start=8, end=17, tz=CHI)
    assert hours.add(FRIDAY_16, Decimal(4)) == at(MONDAY, 11)
    nine_to_five = BusinessHours(days=frozenset(range(1, 6)), start=9, end=17, tz=CHI)
    assert nine_to_five.add(FRIDAY_16, Decimal(4)) == at(MONDAY, 12)
    # Three days of business time, starting before opening; a weekend start waits for Monday.
    assert nine_to_five.add(at(MONDAY, 7), Decimal(20)) == at(MONDAY + dt.timedelta(days=2), 13)
    assert nine_to_five.add(at(MONDAY - dt.timedelta(days=2), 12), Decimal("0.5")) == at(MONDAY, 9, 30)
    # Exactly at closing the remaining time continues next business morning, not at 17:00.
    assert nine_to_five.add(at(MONDAY, 16), Decimal(1)) == at(MONDAY, 17)
    assert nine_to_five.add(at(MONDAY, 16), Decimal("1.25")) == at(MONDAY + dt.timedelta(days=1), 9, 15)


def test_business_hours_follow_the_policy_time_zone():
    utc_hours = BusinessHours(days=frozenset(range(1, 6)), start=8, end=17, tz=zoneinfo.ZoneInfo("UTC"))
    # Friday 16:00 Chicago is 22:00 UTC: after UTC closing, so four hours run Monday 08:00-12:00 UTC.
    assert utc_hours.add(FRIDAY_16, Decimal(4)) == dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)


def test_business_hours_keep_local_opening_times_across_a_dst_change():
    hours = BusinessHours(days=frozenset(range(1, 6)), start=8, end=17, tz=CHI)
    # Clocks go forward on Sunday 14 March 2027: Monday still opens at 08:00 local (13:00 UTC, not 14:00).
    friday = dt.datetime(2027, 3, 12, 16, tzinfo=CHI)
    assert hours.add(friday, Decimal(4)) == dt.datetime(2027, 3, 15, 16, tzinfo=dt.UTC)


# --- levels --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_levels_fire_at_their_business_hours_times(account_manager, executive):
    make_policy(
        {"wait_hours": 4, "condition": "not_acknowledged", "target": "account_manager"},
        {"wait_hours": 8, "condition": "not_resolved", "target": "executives"},
    )
    escalation = open_escalation(FRIDAY_16, owner_user=account_manager)
    assert escalation.policy_snapshot["levels"][0]["wait_hours"] == "4.00"
    assert escalation.next_step_at == at(MONDAY, 11)

    assert sweep(at(MONDAY, 10, 59)) == []
    assert sweep(at(MONDAY, 11)) == ["policy_level"]
    assert step_deliveries(escalation) == [("email_account_manager", "maria@fulcrum-demo.test")]
    escalation.refresh_from_db()
    assert (escalation.policy_step, escalation.policy_level) == (1, 1)
    assert escalation.next_step_at == at(MONDAY, 15)  # Friday 16-17 + Monday 8-15

    assert sweep(at(MONDAY, 14, 59)) == []
    assert sweep(at(MONDAY, 15)) == ["policy_level"]
    assert step_deliveries(escalation)[1:] == [("email_executives", "elena@fulcrum-demo.test")]
    escalation.refresh_from_db()
    assert escalation.next_step_at is None and escalation.step_token is None
    assert sweep(at(MONDAY + dt.timedelta(days=3), 12)) == []
    event = EscalationEvent.objects.filter(escalation=escalation, kind="policy_level").last()
    assert (event.actor, event.via, event.data["level"]) == ("system:policy", "system", 2)
    assert (
        AuditEntry.objects.filter(action="escalation.policy_level", object_id=str(escalation.pk)).count() == 2
    )


@pytest.mark.django_db
def test_acknowledging_stops_not_acknowledged_levels_but_not_not_resolved_ones(account_manager, executive):
    make_policy(
        {"wait_hours": 1, "condition": "not_acknowledged", "target": "account_manager"},
        {"wait_hours": 2, "condition": "not_acknowledged", "target": "executives"},
        {"wait_hours": 3, "condition": "not_resolved", "target": "address", "address": "ops@example.test"},
    )
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    assert sweep(at(MONDAY, 10)) == ["policy_level"]
    escalation_acknowledge(escalation=escalation, actor=account_manager)
    assert sweep(at(MONDAY, 11)) == ["policy_level_skipped"]
    assert sweep(at(MONDAY, 12)) == ["policy_level"]
    assert step_deliveries(escalation) == [
        ("email_account_manager", "maria@fulcrum-demo.test"),
        ("email_address", "ops@example.test"),
    ]
    skipped = EscalationEvent.objects.get(escalation=escalation, kind="policy_level_skipped")
    assert "not acknowledged no longer holds" in skipped.note


@pytest.mark.django_db
def test_resolving_stops_every_level(account_manager):
    make_policy(
        {"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"},
        {"wait_hours": 2, "condition": "not_resolved", "target": "account_manager"},
        route="standard",
    )
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager, route="standard")
    assert sweep(at(MONDAY, 10)) == ["policy_level"]
    escalation_resolve(escalation=escalation, actor=account_manager, outcome="actioned")
    assert sweep(at(MONDAY, 12)) == []
    escalation.refresh_from_db()
    assert escalation.next_step_at is None and escalation.step_token is None
    assert len(step_deliveries(escalation)) == 1


@pytest.mark.django_db
def test_reminders_repeat_in_business_hours_and_stop_at_the_bound(account_manager):
    make_policy(
        {
            "wait_hours": 1,
            "condition": "not_acknowledged",
            "target": "account_manager",
            "repeat_hours": 3,
            "max_repeats": 2,
        }
    )
    escalation = open_escalation(at(MONDAY, 15), owner_user=account_manager)
    assert sweep(at(MONDAY, 16)) == ["policy_level"]
    escalation.refresh_from_db()
    tuesday = MONDAY + dt.timedelta(days=1)
    assert escalation.next_step_at == at(tuesday, 10)  # 16-17 Monday, 8-10 Tuesday
    assert sweep(at(tuesday, 10)) == ["policy_reminder"]
    assert sweep(at(tuesday, 13)) == ["policy_reminder"]
    escalation.refresh_from_db()
    assert escalation.next_step_at is None and escalation.policy_reminders == 2
    assert sweep(at(tuesday + dt.timedelta(days=5), 12)) == []
    assert len(step_deliveries(escalation)) == 3  # the level and two reminders, each its own email
    assert (
        len(set(Delivery.objects.filter(escalation=escalation).values_list("idempotency_key", flat=True)))
        == 3
    )


@pytest.mark.django_db
def test_acknowledging_stops_reminders(account_manager):
    make_policy(
        {
            "wait_hours": 1,
            "condition": "not_acknowledged",
            "target": "account_manager",
            "repeat_hours": 1,
            "max_repeats": 5,
        }
    )
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    assert sweep(at(MONDAY, 10)) == ["policy_level"]
    assert sweep(at(MONDAY, 11)) == ["policy_reminder"]
    escalation_acknowledge(escalation=escalation, actor=account_manager)
    assert sweep(at(MONDAY, 12)) == ["policy_reminders_stopped"]
    escalation.refresh_from_db()
    assert escalation.next_step_at is None
    assert sweep(at(MONDAY, 16)) == []
    assert len(step_deliveries(escalation)) == 2


# --- fencing -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_duplicate_step_task_does_nothing(account_manager):
    make_policy(
        {"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"},
        {"wait_hours": 5, "condition": "not_resolved", "target": "account_manager"},
    )
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    with time_machine.travel(at(MONDAY, 10), tick=False):
        [due] = policy_claim_due()
        assert (
            policy_step_apply(escalation_id=due.escalation_id, step=due.step, token=due.token)
            == "policy_level"
        )
        # The broker redelivers the same message, or the sweeper re-queued it after the lease.
        assert policy_step_apply(escalation_id=due.escalation_id, step=due.step, token=due.token) == "stale"
    with time_machine.travel(at(MONDAY, 15), tick=False):
        # A late copy of step 0 after step 1 became due: its token is long gone.
        assert policy_step_apply(escalation_id=due.escalation_id, step=due.step, token=due.token) == "stale"
        escalation.refresh_from_db()
        assert escalation.policy_step == 1 and str(escalation.step_token) != due.token
    assert len(step_deliveries(escalation)) == 1
    assert policy_events(escalation) == ["policy_level"]


@pytest.mark.django_db
def test_a_claim_is_a_lease_and_a_lost_task_is_requeued_with_the_same_token(account_manager):
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"})
    open_escalation(at(MONDAY, 9), owner_user=account_manager)
    with time_machine.travel(at(MONDAY, 10), tick=False):
        [first] = policy_claim_due()
        assert policy_claim_due() == []  # claimed: the next sweep does not queue it twice
    with time_machine.travel(at(MONDAY, 10, 6), tick=False):
        [again] = policy_claim_due()  # the worker died with the task; the lease ran out
    assert again == first


@pytest.mark.django_db
def test_a_step_task_that_arrives_early_waits(account_manager):
    make_policy({"wait_hours": 2, "condition": "not_resolved", "target": "account_manager"})
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    token = str(escalation.step_token)
    with time_machine.travel(at(MONDAY, 10), tick=False):
        assert policy_step_apply(escalation_id=escalation.pk, step=0, token=token) == "not-due"
    assert step_deliveries(escalation) == []


@pytest.fixture
def no_broker(monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr("apps.escalations.tasks.deliver.delay", sent.append)
    return sent


@pytest.mark.django_db(transaction=True)
def test_a_sweeper_skips_rows_another_sweeper_holds(account_manager, no_broker):
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"})
    escalations = [
        open_escalation(at(MONDAY, 9), owner_user=account_manager, client_name=f"C{i}") for i in range(3)
    ]
    now = at(MONDAY, 10)
    holding, done = threading.Event(), threading.Event()
    claimed: dict[str, list] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():  # keeps the row locks until the other sweeper has looked
                claimed["first"] = policy_claim_due(now=now)
                holding.set()
                done.wait(10)
                # Roll the claim back: a sweeper that waited for the locks would then claim every row.
                transaction.set_rollback(True)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def second() -> None:
        try:
            holding.wait(10)
            claimed["second"] = policy_claim_due(now=now)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert sorted(d.escalation_id for d in claimed["first"]) == sorted(e.pk for e in escalations)
    assert claimed["second"] == []  # skipped, not waited for


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sweepers_fire_each_step_once(account_manager, no_broker):
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"})
    escalations = [
        open_escalation(at(MONDAY, 9), owner_user=account_manager, client_name=f"C{i}") for i in range(12)
    ]
    now = at(MONDAY, 10)
    results: list[str] = []

    def sweeper() -> None:
        for _ in range(3):  # a few rounds each, so both race over the same rows
            for due in policy_claim_due(now=now, limit=5):
                step = policy_step_apply(
                    escalation_id=due.escalation_id, step=due.step, token=due.token, now=now
                )
                results.append(step)

    errors = run_concurrently(sweeper, threads=2)
    assert errors == []
    assert sorted(results) == ["policy_level"] * 12
    assert EscalationEvent.objects.filter(kind="policy_level").count() == 12
    for escalation in escalations:
        assert len(step_deliveries(escalation)) == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_step_applied_concurrently_applies_once(account_manager, no_broker):
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"})
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    now = at(MONDAY, 10)
    results: list[str] = []

    def run() -> None:
        token = str(escalation.step_token)
        results.append(policy_step_apply(escalation_id=escalation.pk, step=0, token=token, now=now))

    assert run_concurrently(run, threads=4) == []
    assert sorted(results) == ["policy_level"] + ["stale"] * 3
    assert len(step_deliveries(escalation)) == 1


# --- auditor ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_auditor_reports_overdue_and_unscheduled_policies(account_manager):
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"})
    healthy = open_escalation(at(MONDAY, 9), owner_user=account_manager, client_name="A")
    overdue = open_escalation(at(MONDAY, 9), owner_user=account_manager, client_name="B")
    unscheduled = open_escalation(at(MONDAY, 9), owner_user=account_manager, client_name="C")
    closed = open_escalation(at(MONDAY, 9), owner_user=account_manager, client_name="D")
    Escalation.objects.filter(pk=overdue.pk).update(next_step_at=at(MONDAY, 9, 30))
    Escalation.objects.filter(pk=unscheduled.pk).update(next_step_at=None, step_token=None)
    Escalation.objects.filter(pk=closed.pk).update(status="resolved", next_step_at=at(MONDAY, 9, 30))
    with time_machine.travel(at(MONDAY, 9, 45), tick=False):
        assert policy_audit() == 2
    entry = AuditEntry.objects.get(action="escalation.policy_stalled")
    assert entry.data["overdue"] == [overdue.pk] and entry.data["unscheduled"] == [unscheduled.pk]
    assert entry.actor == "system:policy-auditor"
    # Within the grace period, and once steps run, nothing is reported.
    with time_machine.travel(at(MONDAY, 9, 35), tick=False):
        Escalation.objects.filter(pk=unscheduled.pk).update(
            next_step_at=at(MONDAY, 10), step_token=uuid.uuid4()
        )
        assert policy_audit() == 0
    sweep(at(MONDAY, 10))
    with time_machine.travel(at(MONDAY, 11), tick=False):
        assert policy_audit() == 0
    assert healthy.pk not in entry.data["overdue"]


# --- freezing --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_route_policy_wins_over_the_default_and_edits_do_not_rewrite_open_escalations(account_manager):
    default = make_policy({"wait_hours": 9, "condition": "not_resolved", "target": "executives"}, route="")
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"}, route="standard")
    standard = open_escalation(at(MONDAY, 9), owner_user=account_manager, route="standard")
    executive = open_escalation(at(MONDAY, 9), owner_user=account_manager, route="executive", client_name="X")
    assert standard.policy_snapshot["route"] == "standard"
    assert (
        executive.policy_id == default.pk and executive.policy_snapshot["levels"][0]["target"] == "executives"
    )
    PolicyLevel.objects.filter(policy=default).update(
        wait_hours=1, target="address", address="x@example.test"
    )
    executive.refresh_from_db()
    assert executive.policy_snapshot["levels"][0]["wait_hours"] == "9.00"
    assert executive.next_step_at == at(MONDAY + dt.timedelta(days=1), 9)  # 8 h Monday + 1 h


@pytest.mark.django_db
def test_no_policy_means_no_steps(account_manager):
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    assert escalation.policy_snapshot == {} and escalation.next_step_at is None
    with time_machine.travel(at(MONDAY, 12), tick=False):
        assert policy_claim_due() == [] and policy_audit() == 0


@pytest.mark.django_db
def test_a_group_level_emails_the_groups_active_members(account_manager, ops_manager, executive):
    group = Group.objects.get(name="Operations managers")
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "group", "group": group})
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    assert escalation.policy_snapshot["levels"][0]["group"] == "Operations managers"
    sweep(at(MONDAY, 10))
    assert step_deliveries(escalation) == [("email_group", "olivia@fulcrum-demo.test")]
    # The outbox knows how to send a policy email to a group member: the escalation email itself.
    assert delivery_attempt(Delivery.objects.get(action="email_group").pk) == "delivered"
    [message] = mail.outbox
    assert message.to == ["olivia@fulcrum-demo.test"] and escalation.subject_label in message.subject


# --- admin -------------------------------------------------------------------------------------------


def _policy_form(**levels):
    data = {
        "name": "Exec",
        "description": "",
        "route": "executive",
        "business_days": "1,2,3,4,5",
        "day_start": "8",
        "day_end": "17",
        "timezone": "America/Chicago",
        "levels-TOTAL_FORMS": str(len(levels)),
        "levels-INITIAL_FORMS": "0",
        "levels-MIN_NUM_FORMS": "0",
        "levels-MAX_NUM_FORMS": "1000",
    }
    for i, level in enumerate(levels.values()):
        base = {"condition": "not_acknowledged", "target": "account_manager", "max_repeats": "3"}
        for key, value in {**base, **level}.items():
            data[f"levels-{i}-{key}"] = value
    return data


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ({"a": {"position": "1", "wait_hours": "0"}}, "more than zero business hours"),
        ({"a": {"position": "1", "wait_hours": "2", "target": "address"}}, "An address is required"),
        ({"a": {"position": "1", "wait_hours": "2", "target": "group"}}, "A group is required"),
        ({"a": {"position": "1", "wait_hours": "2", "repeat_hours": "-1"}}, "reminder interval"),
        (
            {"a": {"position": "1", "wait_hours": "4"}, "b": {"position": "2", "wait_hours": "2"}},
            "less than the level before it",
        ),
    ],
)
def test_admin_refuses_invalid_levels(client, administrator, levels, message):
    client.force_login(administrator)
    response = client.post(reverse("admin:escalations_escalationpolicy_add"), _policy_form(**levels))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not EscalationPolicy.objects.exists()


@pytest.mark.django_db
def test_admin_saves_a_valid_policy_with_levels(client, administrator):
    client.force_login(administrator)
    form = _policy_form(
        a={"position": "1", "wait_hours": "4", "repeat_hours": "2"},
        b={"position": "2", "wait_hours": "8", "target": "address", "address": "ops@example.test"},
    )
    response = client.post(reverse("admin:escalations_escalationpolicy_add"), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    policy = EscalationPolicy.objects.get()
    assert list(policy.levels.values_list("position", "wait_hours", "target")) == [
        (1, Decimal("4.00"), "account_manager"),
        (2, Decimal("8.00"), "address"),
    ]


@pytest.mark.django_db
def test_escalation_admin_shows_policy_progress(
    client, administrator, account_manager, django_assert_max_num_queries
):
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"})
    for i in range(5):
        open_escalation(at(MONDAY, 9), owner_user=account_manager, client_name=f"C{i}")
    sweep(at(MONDAY, 10))
    client.force_login(administrator)
    with django_assert_max_num_queries(12):
        page = client.get(reverse("admin:escalations_escalation_changelist")).content.decode()
    assert "executive policy: level 1/1" in page
    policies = client.get(reverse("admin:escalations_escalationpolicy_changelist"))
    assert policies.status_code == 200 and "executive policy" in policies.content.decode()


# --- through a rule match ------------------------------------------------------------------------------

RULE = """
- key: big-co
  name: Big change order
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: 50000}
  route: executive
  severity: high
  priority: 10
  actions: [email_account_manager, email_executives, flag_dashboard]
  cooldown: 7d
  max_fact_age: 24h
"""


def amount(evidence: dict) -> str:
    [node] = [n for n in evidence["explanation"] if n.get("fact") == "change_order.amount"]
    return str(node["actual"])


@pytest.mark.django_db
def test_a_rule_match_freezes_the_policy_and_the_opening_evidence(executive, client, administrator):
    from apps.connectors.models import StreamState
    from apps.orchestration.pipeline import evaluate_subjects
    from apps.rules.evaluation.facts import ENTITY_STREAMS
    from apps.rules.evaluation.services import rules_import
    from tests.factories import ChangeOrderFactory, ConnectionFactory

    make_policy(
        {"wait_hours": 2, "condition": "not_acknowledged", "target": "executives"}, digest_executives=True
    )
    with time_machine.travel(at(MONDAY, 9), tick=False):
        for entity, streams in ENTITY_STREAMS.items():
            conn = ConnectionFactory(slug=f"src-{entity}")
            for stream in streams:
                StreamState.objects.create(connection=conn, stream=stream, last_success_at=timezone.now())
        co = ChangeOrderFactory(amount=Decimal("60000"))
        rules_import(text=RULE, actor="system:test")
        assert evaluate_subjects(subject_type="change_order", ids=[co.pk]).escalations_opened == 1
    escalation = Escalation.objects.get()
    assert escalation.policy_snapshot["levels"][0]["target"] == "executives"
    assert escalation.next_step_at == at(MONDAY, 11)
    assert escalation.opening_evidence == escalation.evidence
    assert amount(escalation.opening_evidence).startswith("60000")
    # The policy's digest flag batched the executives' first email; the rest went to the outbox as usual.
    assert sorted(escalation.deliveries.values_list("action", flat=True)) == ["digest", "flag_dashboard"]

    with time_machine.travel(at(MONDAY, 10), tick=False):
        ChangeOrder.objects.filter(pk=co.pk).update(amount=Decimal("75000"))
        assert evaluate_subjects(subject_type="change_order", ids=[co.pk]).escalations_refired == 1
    escalation.refresh_from_db()
    assert amount(escalation.evidence).startswith("75000")
    assert amount(escalation.opening_evidence).startswith("60000")
    # The admin shows the evidence it opened on, kept by its opening decision (the row's copy is empty).
    client.force_login(administrator)
    page = client.get(reverse("admin:escalations_escalation_change", args=[escalation.pk])).content.decode()
    opened = html.unescape(page.split("Evidence when it opened", 1)[1].split('class="readonly">', 1)[1])
    opened = opened.split("</div>", 1)[0]
    assert '"value": "60000.00"' in opened and "75000" not in opened
    assert "Opened evidence" not in page and "Opened decision" not in page
    # And the evidence it last fired on, kept by that decision: the re-fire's amount.
    current = html.unescape(page.split(">Evidence:<", 1)[1].split('class="readonly">', 1)[1])
    assert '"value": "75000.00"' in current.split("</div>", 1)[0]
    assert "Evidence copy" not in page and "Evidence decision" not in page
    assert escalation.next_step_at == at(MONDAY, 11)  # a re-fire does not restart the policy
    assert sweep(at(MONDAY, 11)) == ["policy_level"]
    # A policy level is not a "new escalation": it reaches the executive at once, not in a digest.
    assert step_deliveries(escalation) == [("email_executives", "elena@fulcrum-demo.test")]


@pytest.mark.django_db
def test_the_beat_tasks_queue_fenced_steps_and_report_stalls(account_manager, monkeypatch):
    from apps.escalations import tasks

    queued: list[tuple] = []
    monkeypatch.setattr(tasks.apply_policy_step, "delay", lambda *args: queued.append(args))
    make_policy({"wait_hours": 1, "condition": "not_resolved", "target": "account_manager"})
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    with time_machine.travel(at(MONDAY, 10), tick=False):
        assert tasks.sweep_policy_steps() == "1 steps queued, 0 closed released"
        assert queued == [(escalation.pk, 0, str(escalation.step_token))]
        assert tasks.sweep_policy_steps().startswith("0 steps queued")  # claimed: not queued twice
        assert tasks.apply_policy_step(*queued[0]) == "policy_level"
        assert tasks.apply_policy_step(*queued[0]) == "stale"
    with time_machine.travel(at(MONDAY, 12), tick=False):
        Escalation.objects.filter(pk=escalation.pk).update(
            next_step_at=at(MONDAY, 10), step_token=uuid.uuid4()
        )
        assert tasks.audit_policies() == "1 stalled"


@pytest.mark.django_db
def test_policy_notifications_respect_quiet_hours(account_manager, settings):
    settings.TIME_ZONE = "America/Chicago"
    settings.FULCRUM = {**settings.FULCRUM, "QUIET_HOURS": "12-13", "RECIPIENT_HOURLY_CAP": 0}
    make_policy({"wait_hours": 3, "condition": "not_resolved", "target": "account_manager"})
    escalation = open_escalation(at(MONDAY, 9), owner_user=account_manager)
    assert sweep(at(MONDAY, 12)) == ["policy_level"]
    delivery = Delivery.objects.get(idempotency_key__startswith=f"esc{escalation.pk}:s0:")
    assert delivery.next_attempt_at == at(MONDAY, 13)
    assert escalation.suppressed.get().reason == "quiet_hours"


# --- with a real worker ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.usefixtures("celery_worker")
def test_a_step_queued_twice_through_a_real_worker_emails_once(request, account_manager):
    from apps.escalations import tasks

    smtp = request.getfixturevalue("smtp_server")

    make_policy(
        {"wait_hours": 1, "condition": "not_resolved", "target": "address", "address": "ops@example.test"},
        start=0,
        end=24,
        business_days="1,2,3,4,5,6,7",
    )
    escalation = make_escalation(owner_user=account_manager)
    opened = timezone.now() - dt.timedelta(hours=2)
    Escalation.objects.filter(pk=escalation.pk).update(opened_at=opened)
    escalation.refresh_from_db()
    policy_start(escalation=escalation, now=opened)
    assert tasks.sweep_policy_steps().startswith("1 steps queued")
    # The broker delivers the same step twice (a redelivery after a lost ack, or a re-queued lease).
    tasks.apply_policy_step.delay(escalation.pk, 0, str(escalation.step_token))
    wait_for(lambda: smtp.to("ops@example.test"), timeout=60, message="the level's email")
    wait_for(
        lambda: not Delivery.objects.exclude(state="delivered").exists(), timeout=30, message="outbox drained"
    )
    time.sleep(2)  # room for a second email, if the duplicate were to send one
    assert len(smtp.to("ops@example.test")) == 1
    assert policy_events(escalation) == ["policy_level"]
    escalation.refresh_from_db()
    assert escalation.policy_step == 1 and escalation.next_step_at is None


@pytest.mark.django_db
def test_admin_replay_requeues_dead_deliveries_through_the_audited_service(client, administrator):
    escalation = make_escalation()
    now = timezone.now()
    dead, delivered = (
        Delivery.objects.create(
            escalation=escalation,
            action="email_account_manager",
            target="x@example.test",
            idempotency_key=f"k{state}",
            state=state,
            attempts=8,
            next_attempt_at=now,
            created_at=now,
            last_error="gave up",
        )
        for state in ("dead", "delivered")
    )
    client.force_login(administrator)
    response = client.post(
        reverse("admin:escalations_delivery_changelist"),
        {"action": "replay", "_selected_action": [dead.pk, delivered.pk]},
        follow=True,
    )
    assert "1 deliveries queued again." in response.content.decode()
    dead.refresh_from_db()
    delivered.refresh_from_db()
    assert (dead.state, dead.attempts) == ("pending", 0) and delivered.state == "delivered"
    entry = AuditEntry.objects.get(action="delivery.replayed")
    assert entry.object_id == str(dead.pk) and entry.actor == "user:avery"
