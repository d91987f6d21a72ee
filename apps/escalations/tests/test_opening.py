"""Opening escalations in bulk: a batch gives what its matches give one at a time, in constant queries."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.roles import EXECUTIVES
from apps.audit.models import AuditEntry
from apps.bulk import reserve_ids
from apps.connectors.models import StreamState
from apps.entities.models import SourceObject
from apps.escalations import opening
from apps.escalations.models import (
    Delivery,
    DigestItem,
    Escalation,
    EscalationEvent,
    EscalationPolicy,
    PolicyLevel,
    SuppressedNotification,
)
from apps.orchestration.pipeline import evaluate_subjects
from apps.rules.evaluation.facts import ENTITY_STREAMS, compute_contexts
from apps.rules.evaluation.services import _compiled_for, live_versions, rules_import
from apps.rules.models import Decision, Rule, SubjectState
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    ProjectFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

# Inside the quiet hours (0-23 local) and business hours; the noise controls all read this instant.
MONDAY_10 = dt.datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=zoneinfo.ZoneInfo("America/Chicago"))

RULES = """
- key: exec-rule
  name: Big change order
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: 50000}
  route: executive
  severity: high
  priority: 10
  actions: [email_account_manager, email_executives, flag_dashboard, note_crm, note_accounting]
  cooldown: 7d
  max_fact_age: 24h
- key: std-rule
  name: Sizeable change order
  subject: change_order
  when:
    all:
      - {fact: change_order.amount, op: gte, value: 20000}
  route: standard
  severity: critical
  priority: 50
  actions: [email_account_manager, email_executives, flag_dashboard]
  cooldown: 3d
  max_fact_age: 24h
"""


@pytest.fixture
def noisy(noise):
    """Every noise control on: an hourly cap of 2, quiet hours around the clock, a digest policy."""
    noise.FULCRUM = {**noise.FULCRUM, "QUIET_HOURS": "0-23", "RECIPIENT_HOURLY_CAP": 2}
    return noise


def _world(now: dt.datetime) -> list[int]:
    """Change orders that, evaluated in id order, open, re-fire, cool down, snooze, suppress, cap,
    digest, skip actions and auto-resolve. Returns their ids."""
    synced = now - dt.timedelta(minutes=5)
    for entity, streams in ENTITY_STREAMS.items():
        conn = ConnectionFactory(slug=f"src-{entity}")
        for stream in streams:
            StreamState.objects.create(connection=conn, stream=stream, last_success_at=synced)
    executives = Group.objects.get(name=EXECUTIVES)
    for name in ("elena", "erik"):
        UserFactory(username=name, email=f"{name}@fulcrum-demo.test").groups.add(executives)
    policy = EscalationPolicy.objects.create(
        name="executive", route="executive", digest_executives=True, day_start=0, day_end=24
    )
    PolicyLevel.objects.create(policy=policy, position=1, wait_hours=2, target="executives")
    shared = CrmOwnerFactory(email="shared.owner@example.test")
    other = CrmOwnerFactory(email="other.owner@example.test")

    def change_order(amount: str, owner: Any = shared, **client: Any) -> int:
        project = ProjectFactory(client=ClientFactory(owner=owner, **client))
        FinancialLineFactory(project=project, kind="invoice", amount=Decimal("1000000"))
        return ChangeOrderFactory(project=project, amount=Decimal(amount)).pk

    ids = [
        change_order("60000"),  # opens: the shared owner's first email this hour
        change_order("61000"),  # opens: the second (both rules match; standard is suppressed by route)
        change_order("62000"),  # opens: the third is over the cap of 2
        change_order("63000", owner=other),  # already open: a re-fire
        change_order("64000", owner=other),  # closed last week, still in cooldown
        change_order("65000", owner=other),  # snoozed
        change_order("30000", owner=other),  # only the standard rule: opens, critical, one email left
        change_order("100", owner=other),  # stopped matching: its open escalation auto-resolves
        change_order("66000", owner=None),  # no account manager, no CRM link: actions skipped
        change_order("31000", owner=other),  # standard again: both owner and executives now capped,
        # the executives because this hour's digest (opened above) counts as one email
    ]
    SourceObject.objects.create(
        connection=ConnectionFactory(slug="books"),
        object_type="customer",
        external_id="cust-1",
        name="Customer one",
        client=ChangeOrderFactory._meta.model.objects.get(pk=ids[0]).project.client,
        source_updated_at=now,
        content_hash="0" * 32,
        synced_at=now,
    )
    rules_import(text=RULES, actor="system:test")
    exec_rule = Rule.objects.get(key="exec-rule")
    version = exec_rule.live_version
    for subject_id, status in ((ids[3], "open"), (ids[4], "resolved"), (ids[7], "acknowledged")):
        Escalation.objects.create(
            rule=exec_rule,
            rule_version=version,
            subject_type="change_order",
            subject_id=subject_id,
            subject_label="earlier",
            route="executive",
            severity="high",
            priority=10,
            status=status,
            summary="earlier",
            evidence={},
            opened_at=now - dt.timedelta(days=2),
            last_fired_at=now - dt.timedelta(days=2),
        )
    states = {
        ids[3]: {"last_outcome": "matched"},
        ids[4]: {"last_outcome": "matched", "cooldown_until": now + dt.timedelta(days=5)},
        ids[5]: {"last_outcome": "not_matched", "snoozed_until": now + dt.timedelta(days=1)},
        ids[7]: {"last_outcome": "matched"},
    }
    for subject_id, fields in states.items():
        SubjectState.objects.create(
            rule=exec_rule,
            subject_type="change_order",
            subject_id=subject_id,
            last_evaluated_at=now - dt.timedelta(days=1),
            snooze_reason="client call" if "snoozed_until" in fields else "",
            **fields,
        )
    # An email to the other owner 30 minutes ago counts toward its cap.
    earlier = Escalation.objects.get(subject_id=ids[3])
    Delivery.objects.create(
        escalation=earlier,
        action="email_account_manager",
        target=other.email,
        idempotency_key="earlier-email",
        next_attempt_at=now - dt.timedelta(minutes=30),
        created_at=now - dt.timedelta(minutes=30),
    )
    return ids


def _outcome(ids: list[int], dispatched: list[int], first_id: int) -> dict[str, Any]:
    """Everything the evaluation wrote, with database ids replaced by what they stand for."""
    keys = {e.pk: (e.rule.key, e.subject_id) for e in Escalation.objects.select_related("rule")}
    decisions = {d.pk: (d.rule_version.rule.key, d.subject_id) for d in Decision.objects.select_related()}
    deliveries = dict(Delivery.objects.values_list("pk", "idempotency_key"))

    def named(text: str) -> str:
        return re.sub(r"esc(\d+)", lambda m: f"esc{keys[int(m.group(1))]}", text)

    return {
        "escalations": sorted(
            (
                keys[e.pk],
                e.status,
                e.outcome,
                e.fire_count,
                e.subject_label,
                e.client_id,
                e.project_id,
                e.route,
                e.severity,
                e.priority,
                e.summary,
                e.evidence,
                e.opened_evidence,
                decisions.get(e.opened_decision_id),
                e.policy_id,
                e.policy_snapshot,
                e.next_step_at,
                e.step_token is not None,
                e.closed_at,
                e.last_fired_at,
            )
            for e in Escalation.objects.select_related("rule")
        ),
        "decisions": sorted(
            (
                decisions[d.pk],
                d.outcome,
                d.suppressed,
                keys.get(d.escalation_id),
                d.facts,
                d.explanation,
                d.summary,
                d.trigger,
                d.evaluated_at,
            )
            for d in Decision.objects.select_related("rule_version__rule")
        ),
        "states": sorted(
            SubjectState.objects.values_list(
                "rule__key",
                "subject_id",
                "last_outcome",
                "last_evaluated_at",
                "cooldown_until",
                "snoozed_until",
            )
        ),
        "events": sorted(
            (keys[e.escalation_id], e.kind, e.actor, e.via, e.note, sorted(e.data.items()))
            for e in EscalationEvent.objects.all()
        ),
        "opened_at": sorted(
            (keys[e.escalation_id], e.created_at) for e in EscalationEvent.objects.filter(kind="opened")
        ),
        "deliveries": sorted(
            (
                named(d.idempotency_key),
                keys[d.escalation_id],
                d.action,
                d.target,
                d.state,
                d.next_attempt_at,
                d.created_at,
            )
            for d in Delivery.objects.all()
        ),
        "digest_items": sorted(
            (deliveries[i.delivery_id], keys[i.escalation_id], i.added_at) for i in DigestItem.objects.all()
        ),
        "suppressed": sorted(
            (
                keys[s.escalation_id],
                s.action,
                s.target,
                s.reason,
                s.detail,
                named(deliveries[s.delivery_id]) if s.delivery_id else None,
                s.deferred_until,
            )
            for s in SuppressedNotification.objects.all()
        ),
        "audit": sorted(
            (
                a.action,
                keys.get(int(a.object_id)) if a.object_type == "escalation" else decisions[int(a.object_id)],
                repr(sorted(a.data.items())),
            )
            for a in AuditEntry.objects.filter(id__gte=first_id)
        ),
        "dispatched": sorted(named(deliveries[pk]) for pk in dispatched),
    }


def _run(ids: list[int], now: dt.datetime, monkeypatch: Any, one_by_one: bool) -> tuple[dict, dict]:
    dispatched: list[int] = []
    monkeypatch.setattr("apps.escalations.noise.deliveries_dispatch", dispatched.extend)
    first_id = (AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    report: dict[str, Any] = {}
    # Commit callbacks run at the end of each evaluation, as a real commit would run them.
    with transaction.atomic():
        for batch in [[pk] for pk in ids] if one_by_one else [ids]:
            with transaction.atomic():
                done = evaluate_subjects(subject_type="change_order", ids=batch, now=now)
            for name in ("escalations_opened", "escalations_refired", "suppressed", "auto_resolved"):
                report[name] = report.get(name, 0) + getattr(done, name)
            for callback in connection.run_on_commit[:]:
                callback[1]()
            connection.run_on_commit.clear()
        return _outcome(ids, dispatched, first_id), report


def test_opening_a_batch_gives_what_one_at_a_time_gives(noisy, monkeypatch):
    now = MONDAY_10
    ids = _world(now)
    sid = transaction.savepoint()
    batch, batch_report = _run(ids, now, monkeypatch, one_by_one=False)
    transaction.savepoint_rollback(sid)
    single, single_report = _run(ids, now, monkeypatch, one_by_one=True)

    assert (
        batch_report
        == single_report
        == {
            "escalations_opened": 6,
            "escalations_refired": 1,
            "suppressed": 9,  # the standard rule by route on 7 subjects, a cooldown, a snooze
            "auto_resolved": 1,
        }
    )
    for part in batch:
        assert batch[part] == single[part], part
    # The scenario exercised what it claims to.
    reasons = {reason for _, _, _, reason, *_ in batch["suppressed"]}
    assert reasons == {"capped", "digest", "quiet_hours"}
    assert any("cooldown until" in suppressed for _, _, suppressed, *_ in batch["decisions"])
    assert any(kind == "action_skipped" for _, kind, *_ in batch["events"])
    skipped = EscalationEvent.objects.filter(kind="action_skipped").values_list("note", flat=True)
    assert "Email to the account manager: no one to send it to" in set(skipped)
    assert any(action == "digest" for _, _, action, *_ in batch["deliveries"])
    assert batch["dispatched"], "rows due now (critical email to executives bypasses quiet hours)"
    # A dashboard flag is done by opening the escalation: its row is delivered then, no worker takes it.
    flags = Delivery.objects.filter(action="flag_dashboard")
    assert flags.count() == 6
    assert {(f.state, f.attempts, f.delivered_at, f.response.get("flagged")) for f in flags} == {
        ("delivered", 1, now, True)
    }
    assert not [key for key in batch["dispatched"] if ":flag_dashboard:" in key]
    # The frozen policy's first step, to the microsecond: two business hours after opening.
    steps = set(
        Escalation.objects.filter(route="executive", opened_at=now).values_list("next_step_at", flat=True)
    )
    assert steps == {now + dt.timedelta(hours=2)}


def _winner(version: Any, subject_id: int, now: dt.datetime) -> Escalation:
    """The escalation another transaction opened for the pair meanwhile."""
    return Escalation.objects.create(
        rule=version.rule,
        rule_version=version,
        subject_type="change_order",
        subject_id=subject_id,
        subject_label="the winner",
        route="executive",
        severity="high",
        priority=10,
        summary="won",
        evidence={},
        opened_at=now,
        last_fired_at=now,
    )


def _blind_first_refire(monkeypatch: Any) -> list[int]:
    """Opening's first look for open escalations sees none (as if another transaction opened one just
    after it looked); the calls are counted in the list returned."""
    real_refire = opening.escalations_refire
    calls: list[int] = []

    def blind_first_look(**kwargs: Any) -> Any:
        calls.append(1)
        return list(kwargs["fired"]) if len(calls) == 1 else real_refire(**kwargs)

    monkeypatch.setattr(opening, "escalations_refire", blind_first_look)
    return calls


def _stored_decision(version: Any, context: Any, evaluation: Any) -> Decision:
    """A match's traced decision, stored as the batch stores it before opening (escalations read their
    evidence from it)."""
    trace = evaluation.to_json()
    return Decision.objects.create(
        rule_version=version,
        subject_type="change_order",
        subject_id=context.subject_id,
        outcome="matched",
        trigger="manual",
        evaluated_at=timezone.now(),
        facts=context.snapshot(),
        explanation=trace,
        summary=trace["summary"],
    )


def test_a_claim_lost_to_another_transaction_becomes_a_refire(monkeypatch, settings):
    """The INSERT skips a pair another transaction opened after the re-fire check looked: that match
    re-fires the winner's escalation in the next round, as a single INSERT hitting the index did."""
    now = timezone.now()
    ids = _world(now)[:1]
    version = next(v for v in live_versions("change_order") if v.rule.key == "exec-rule")
    [context] = list(compute_contexts("change_order", ids, now=now))
    evaluated = _compiled_for(version)[0].evaluate(context.values, ages=context.ages)
    decision = _stored_decision(version, context, evaluated)
    winner = _winner(version, ids[0], now)
    calls = _blind_first_refire(monkeypatch)
    results = opening.escalations_fire(
        subject_type="change_order", fired=[(version, context, evaluated, decision)], now=now
    )
    assert results == ["refired"] and len(calls) == 2
    winner.refresh_from_db()
    assert winner.fire_count == 2 and Escalation.objects.count() == 4  # the winner and _world's three
    assert winner.summary == decision.summary and winner.evidence["facts"] == decision.facts
    assert winner.evidence["explanation"] == decision.explanation["explanation"]
    assert winner.opened_evidence == {}  # a re-fire refreshes the evidence, not the opening one
    assert decision.escalation == winner and decision.suppressed == "already open: re-fire counted"
    assert not winner.deliveries.exists()


def test_the_same_pair_twice_in_a_batch_opens_once_then_refires(settings):
    now = timezone.now()
    ids = _world(now)[:1]
    version = next(v for v in live_versions("change_order") if v.rule.key == "exec-rule")
    [context] = list(compute_contexts("change_order", ids, now=now))
    evaluated = _compiled_for(version)[0].evaluate(context.values, ages=context.ages)
    first, second = (_stored_decision(version, context, evaluated) for _ in range(2))
    results = opening.escalations_fire(
        subject_type="change_order",
        fired=[(version, context, evaluated, first), (version, context, evaluated, second)],
        now=now,
    )
    assert results == ["opened", "refired"]
    escalation = Escalation.objects.get(subject_id=ids[0])
    assert escalation.fire_count == 2 and first.escalation == second.escalation == escalation
    assert escalation.events.filter(kind="opened").count() == 1
    evidence = {
        "facts": first.facts,
        "explanation": first.explanation["explanation"],
        "outcome": "matched",
        "rule_version": version.number,
    }
    assert escalation.evidence == escalation.opening_evidence == evidence
    assert escalation.opened_evidence == {} and escalation.opened_decision == first  # kept once, by reference
    assert escalation.summary == first.summary and "is at least" in escalation.summary
    first.refresh_from_db()
    assert first.escalation_id == escalation.pk and first.suppressed == ""


def test_an_unstored_decision_cannot_open_or_refire(settings):
    """The evidence is copied from the stored decision: opening from one not stored is a bug, not a
    silently empty escalation."""
    now = timezone.now()
    ids = _world(now)
    version = next(v for v in live_versions("change_order") if v.rule.key == "exec-rule")
    for subject_id in (ids[0], ids[3]):  # nothing open yet; open (_world opened it)
        [context] = list(compute_contexts("change_order", [subject_id], now=now))
        evaluated = _compiled_for(version)[0].evaluate(context.values, ages=context.ages)
        decision = Decision(
            rule_version=version, subject_type="change_order", subject_id=subject_id, outcome="matched"
        )
        with pytest.raises(ValueError, match="store the decisions first"), transaction.atomic():
            opening.escalations_fire(
                subject_type="change_order", fired=[(version, context, evaluated, decision)], now=now
            )
    assert Escalation.objects.filter(subject_id=ids[0]).count() == 0
    assert Escalation.objects.get(subject_id=ids[3]).fire_count == 1


def _reserved_match(now: dt.datetime) -> tuple[Any, Any, Any, Decision, int]:
    """A match stored as the pipeline stores it: pointing at the escalation id reserved for it."""
    ids = _world(now)[:1]
    version = next(v for v in live_versions("change_order") if v.rule.key == "exec-rule")
    [context] = list(compute_contexts("change_order", ids, now=now))
    evaluated = _compiled_for(version)[0].evaluate(context.values, ages=context.ages)
    [reserved] = reserve_ids(Escalation._meta.db_table, 1)
    decision = _stored_decision(version, context, evaluated)
    Decision.objects.filter(pk=decision.pk).update(escalation_id=reserved)
    decision.escalation_id = reserved
    return version, context, evaluated, decision, reserved


def _open_reserved(
    version: Any, context: Any, evaluated: Any, decision: Decision, reserved: int
) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        results, _entries = opening.escalations_open(
            subject_type="change_order",
            fired=[(version, context, evaluated, decision)],
            now=timezone.now(),
            reserved={(version.rule_id, context.subject_id): reserved},
        )
    updates = [q["sql"] for q in queries if q["sql"].lstrip().startswith("UPDATE rules_decision")]
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # every pending foreign key holds
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    return [*results, *(["decision updated"] if updates else [])]


def test_a_match_opens_under_its_reserved_id_and_its_decision_is_not_written_again(settings):
    version, context, evaluated, decision, reserved = _reserved_match(timezone.now())
    assert _open_reserved(version, context, evaluated, decision, reserved) == ["opened"]
    escalation = Escalation.objects.get(pk=reserved)
    assert (escalation.rule_id, escalation.subject_id) == (version.rule_id, context.subject_id)
    assert escalation.events.filter(kind="opened").count() == 1
    decision.refresh_from_db()
    assert decision.escalation_id == reserved and decision.suppressed == ""


def test_a_reserved_match_whose_claim_is_lost_points_at_the_winner_and_its_id_stays_unused(
    monkeypatch, settings
):
    now = timezone.now()
    version, context, evaluated, decision, reserved = _reserved_match(now)
    winner = _winner(version, context.subject_id, now)
    calls = _blind_first_refire(monkeypatch)
    results = _open_reserved(version, context, evaluated, decision, reserved)
    assert results == ["refired", "decision updated"] and len(calls) == 2
    assert not Escalation.objects.filter(pk=reserved).exists()
    decision.refresh_from_db()
    assert decision.escalation_id == winner.pk and decision.suppressed == "already open: re-fire counted"


def test_a_reserved_match_held_in_cooldown_points_at_no_escalation(settings):
    now = timezone.now()
    version, context, evaluated, decision, reserved = _reserved_match(now)
    SubjectState.objects.update_or_create(
        rule=version.rule,
        subject_type="change_order",
        subject_id=context.subject_id,
        defaults={
            "last_outcome": "matched",
            "last_evaluated_at": now,
            "cooldown_until": now + dt.timedelta(days=1),
        },
    )
    assert _open_reserved(version, context, evaluated, decision, reserved) == ["cooldown", "decision updated"]
    assert not Escalation.objects.filter(pk=reserved).exists()
    decision.refresh_from_db()
    assert decision.escalation_id is None and decision.suppressed.startswith("cooldown until")


def test_a_batch_writes_again_only_the_decisions_of_matches_it_did_not_open(noisy):
    """The decisions of matches that open escalations go into the batch's COPY pointing at them; only
    the one held in cooldown (_world's fifth) is updated afterwards."""
    ids = _world(timezone.now())
    with CaptureQueriesContext(connection) as queries:
        report = evaluate_subjects(subject_type="change_order", ids=ids)
    [update] = [q["sql"] for q in queries if q["sql"].lstrip().startswith("UPDATE rules_decision")]
    updated = re.search(r"'\{([0-9,]*)\}'::bigint\[\]", update)
    held = Decision.objects.get(suppressed__startswith="cooldown until")
    assert updated is not None and updated.group(1) == str(held.pk) and held.escalation_id is None
    assert report.escalations_opened == 6
    opened = Decision.objects.filter(escalation__isnull=False, suppressed="")
    assert sorted(opened.values_list("escalation_id", flat=True)) == sorted(
        Escalation.objects.filter(events__kind="opened").values_list("pk", flat=True)
    )


def _queries_to_open(count: int) -> tuple[int, int]:
    synced = timezone.now() - dt.timedelta(minutes=5)
    for entity, streams in ENTITY_STREAMS.items():
        conn = ConnectionFactory(slug=f"src-{entity}")
        for stream in streams:
            StreamState.objects.update_or_create(
                connection=conn, stream=stream, defaults={"last_success_at": synced}
            )
    ids = []
    for _ in range(count):
        project = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory()))
        FinancialLineFactory(project=project, kind="invoice", amount=Decimal("1000000"))
        ids.append(ChangeOrderFactory(project=project, amount=Decimal("70000")).pk)
    with CaptureQueriesContext(connection) as queries:
        report = evaluate_subjects(subject_type="change_order", ids=ids)
    return report.escalations_opened, len(queries)


def test_opening_many_escalations_costs_the_same_queries_as_opening_a_few(noisy):
    rules_import(text=RULES, actor="system:test")
    Group.objects.get(name=EXECUTIVES).user_set.add(UserFactory(username="elena", email="elena@example.test"))
    # What the cap holds back rolls into each person's digest; the first batch of the hour opens those
    # digests (a few queries once per person and period), later batches only add to them.
    _queries_to_open(3)
    few = _queries_to_open(3)
    many = _queries_to_open(30)
    assert few[0] == 3 and many[0] == 30
    assert many[1] == few[1], (few, many)
    assert many[1] <= 45  # ~17 per escalation before the batch path
