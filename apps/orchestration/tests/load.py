"""A demo-like company for the orchestration map: three systems, 12 streams, N published rules, a week of
syncs, evaluations (single ones and nightly bulk runs), escalations, outbox rows and outcome labels.

Used by the map's query-bound test, ``bench/orchestration_map.py`` and the screenshot. Rows are written
with ``bulk_create``; every rule is a real published version whose conditions compile.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from django.utils import timezone

from apps.connectors.models import Connection, StreamState, SyncRun, WebhookDelivery
from apps.escalations.models import Delivery, Escalation
from apps.rules.engine import FACTS, FactType, facts_for
from apps.rules.models import Decision, EvaluationRun, Rule, RuleVersion

STREAMS = {
    ("crm", "hubspot"): ("owners", "companies"),
    ("accounting", "quickbooks"): ("customers", "invoices", "estimates", "bills", "purchases"),
    ("pm", "procore"): ("projects", "vendors", "milestones", "change_orders", "submittals"),
}
ACTION_SETS = (
    ["email_account_manager", "flag_dashboard"],
    ["email_account_manager", "email_executives", "flag_dashboard", "note_crm", "note_accounting"],
    ["flag_dashboard", "note_crm"],
    ["email_executives", "escalate_pm"],
    ["email_account_manager", "note_accounting"],
)
SUBJECTS = ("change_order", "project", "client", "submittal")
OPTIONS = {"quickbooks": {"realm_id": "9130350000000001"}, "procore": {"company_id": 4242}}


@dataclass
class Load:
    connections: list[Connection]
    rules: list[Rule]
    versions: list[RuleVersion]


def _leaf(name: str, rng: random.Random) -> dict[str, object]:
    fact = FACTS[name]
    if fact.type is FactType.BOOL:
        return {"fact": name, "op": "is", "value": True}
    if fact.type is FactType.TEXT:
        return (
            {"fact": name, "op": "eq", "value": fact.choices[0]}
            if fact.choices
            else {"fact": name, "op": "is_null"}
        )
    if fact.type is FactType.DATE:
        return {"fact": name, "op": "is_null"}
    return {"fact": name, "op": rng.choice(["gt", "gte", "lt"]), "value": rng.choice([0, 5, 12, 50000])}


def publish_rule(
    key: str, name: str, subject: str, facts: list[str], actions: list[str], **extra: object
) -> RuleVersion:
    """A rule with one published version reading ``facts`` (all of them must hold) and taking ``actions``."""
    rng = random.Random(key)
    spec = {
        "key": key,
        "name": name,
        "subject": subject,
        "when": {"all": [_leaf(f, rng) for f in facts]},
        "route": "executive" if "email_executives" in actions else "standard",
        "severity": "high",
        "actions": actions,
        **extra,
    }
    rule = Rule.objects.create(key=key, name=name, subject_type=subject, draft=spec)
    version = RuleVersion.objects.create(
        rule=rule,
        number=1,
        spec=spec,
        spec_hash=f"hash-{key}",
        published_at=timezone.now() - dt.timedelta(days=30),
    )
    Rule.objects.filter(pk=rule.pk).update(live_version=version)
    rule.live_version = version
    return version


def fill(
    *,
    rules: int = 50,
    decisions_per_rule: int = 200,
    escalations_per_rule: int = 6,
    now: dt.datetime | None = None,
    seed: int = 16,
) -> Load:
    rng = random.Random(seed)
    now = now or timezone.now()
    connections: list[Connection] = []
    states: list[StreamState] = []
    runs: list[SyncRun] = []
    for (slug, kind), names in STREAMS.items():
        conn = Connection.objects.create(
            slug=slug,
            kind=kind,
            base_url="http://127.0.0.1:9",
            schedule="*/15 * * * *",
            options=OPTIONS.get(kind, {}),
        )
        connections.append(conn)
        for name in names:
            # One stream failing (its last run), one stale (no success for two hours); the rest fresh.
            failing = (slug, name) == ("accounting", "estimates")
            stale = (slug, name) == ("pm", "vendors")
            last_success = now - dt.timedelta(hours=2 if stale else 0, minutes=rng.randint(1, 12))
            states.append(
                StreamState(connection=conn, stream=name, last_success_at=last_success, record_count=500)
            )
            for i in range(7 * 24 // 3):  # a run every three hours for a week
                started = now - dt.timedelta(hours=3 * i, minutes=rng.randint(0, 30))
                status = SyncRun.Status.FAILED if failing and i == 0 else SyncRun.Status.SUCCEEDED
                seen = rng.randint(0, 400)
                runs.append(
                    SyncRun(
                        connection=conn,
                        stream=name,
                        status=status,
                        started_at=started,
                        heartbeat_at=started,
                        finished_at=started + dt.timedelta(seconds=20),
                        counts={
                            "seen": seen,
                            "inserted": seen // 10,
                            "updated": seen // 5,
                            "unchanged": seen // 2,
                        },
                        error="HTTP 503 from upstream" if status == SyncRun.Status.FAILED else "",
                    )
                )
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            connection=conn,
            event_id=f"{conn.slug}-{i}",
            received_at=(at := now - dt.timedelta(minutes=rng.randint(1, 7 * 24 * 60))),
            status_changed_at=at,
            status=WebhookDelivery.Status.PROCESSED,
            body=b"{}",
            signature_valid=True,
        )
        for conn in connections
        for i in range(40)
    )
    StreamState.objects.bulk_create(states)
    SyncRun.objects.bulk_create(runs, batch_size=2000)

    versions: list[RuleVersion] = []
    for i in range(rules):
        subject = SUBJECTS[i % len(SUBJECTS)]
        numeric = [f.name for f in facts_for(subject) if f.type is not FactType.DATE]
        picked = rng.sample(numeric, k=min(len(numeric), rng.randint(1, 3)))
        versions.append(
            publish_rule(
                f"rule-{i:02d}",
                f"{subject.replace('_', ' ').capitalize()} check {i:02d}",
                subject,
                picked,
                list(ACTION_SETS[i % len(ACTION_SETS)]),
            )
        )

    _activity(
        versions, now, rng, decisions_per_rule=decisions_per_rule, escalations_per_rule=escalations_per_rule
    )
    return Load(connections=connections, rules=[v.rule for v in versions], versions=versions)


def _activity(
    versions: list[RuleVersion],
    now: dt.datetime,
    rng: random.Random,
    *,
    decisions_per_rule: int,
    escalations_per_rule: int,
) -> None:
    """A week of evaluations, nightly bulk runs, escalations, outbox rows and outcome labels."""
    decisions: list[Decision] = []
    outcomes = (
        [Decision.Verdict.MATCHED] + [Decision.Verdict.NOT_MATCHED] * 6 + [Decision.Verdict.INSUFFICIENT]
    )
    for version in versions:
        for j in range(decisions_per_rule):
            decisions.append(
                Decision(
                    rule_version=version,
                    subject_type=version.rule.subject_type,
                    subject_id=j,
                    outcome=rng.choice(outcomes),
                    trigger=Decision.Trigger.SYNC,
                    evaluated_at=now - dt.timedelta(minutes=rng.randint(1, 7 * 24 * 60)),
                )
            )
    Decision.objects.bulk_create(decisions, batch_size=5000)
    # A nightly bulk run per subject type per day: summaries, not rows.
    evaluation_runs = []
    for day in range(7):
        for subject in SUBJECTS:
            live = [v for v in versions if v.rule.subject_type == subject]
            evaluation_runs.append(
                EvaluationRun(
                    subject_type=subject,
                    trigger=Decision.Trigger.SCHEDULE,
                    evaluated_at=now - dt.timedelta(days=day, hours=5),
                    completed_at=now - dt.timedelta(days=day, hours=5),
                    subjects=1000,
                    outcomes=[
                        {
                            "rule": v.rule.key,
                            "version": v.number,
                            "rule_version_id": v.pk,
                            "matched": 20,
                            "not_matched": 970,
                            "insufficient_data": 10,
                            "decisions": 30,
                        }
                        for v in live
                    ],
                )
            )
    EvaluationRun.objects.bulk_create(evaluation_runs)

    escalations: list[Escalation] = []
    labels = ["actioned", "approved", "no_action_needed", "false_alarm", "duplicate", "auto_resolved", ""]
    for version in versions:
        for k in range(escalations_per_rule):
            opened = now - dt.timedelta(hours=rng.uniform(0.2, 7 * 24))
            label = rng.choice(labels)
            closed = min(now, opened + dt.timedelta(hours=rng.uniform(0.1, 30))) if label else None
            escalations.append(
                Escalation(
                    rule=version.rule,
                    rule_version=version,
                    subject_type=version.rule.subject_type,
                    subject_id=10_000 + k,
                    subject_label=f"{version.rule.subject_type} {10_000 + k}",
                    route=version.spec["route"],
                    severity="high",
                    priority=10,
                    status=Escalation.Status.RESOLVED if label else Escalation.Status.OPEN,
                    outcome=label,
                    summary="demo",
                    evidence_copy={},
                    opened_at=opened,
                    last_fired_at=opened,
                    closed_at=closed,
                )
            )
    Escalation.objects.bulk_create(escalations, batch_size=2000)
    deliveries: list[Delivery] = []
    states_pick = [Delivery.State.DELIVERED] * 30 + [Delivery.State.FAILED, Delivery.State.PENDING]
    for escalation in escalations:
        for action in escalation.rule_version.spec["actions"]:
            state = rng.choice(states_pick)
            if action == "escalate_pm" and rng.random() < 0.5:
                state = Delivery.State.DEAD  # the PM system refusing RFIs: a failing action on the map
            deliveries.append(
                Delivery(
                    escalation=escalation,
                    action=action,
                    target=f"{action}-target",
                    idempotency_key=f"{escalation.pk}:{action}",
                    state=state,
                    attempts=1,
                    next_attempt_at=escalation.opened_at,
                    created_at=escalation.opened_at + dt.timedelta(seconds=5),
                    delivered_at=escalation.opened_at if state == Delivery.State.DELIVERED else None,
                )
            )
    Delivery.objects.bulk_create(deliveries, batch_size=5000)


# A company like the demo's: its SPEC rule (config/demo/rules.yaml) and the rules operators add next.
DEMO_RULES = (
    ("co-exec-review", "Change order needs executive judgment", "change_order",
     ["change_order.amount", "project.margin_pct", "client.missed_last_milestone", "client.days_to_renewal"],
     ["email_account_manager", "email_executives", "flag_dashboard", "note_crm", "note_accounting"]),
    ("co-large-share", "Change order is a large share of the contract", "change_order",
     ["change_order.amount_pct_of_contract"], ["email_account_manager", "flag_dashboard"]),
    ("co-stale-pending", "Change order pending too long", "change_order",
     ["change_order.status", "change_order.age_days"], ["email_account_manager", "note_crm"]),
    ("margin-erosion", "Project margin eroding", "project",
     ["project.margin_pct", "project.change_order_amount_30d"], ["email_executives", "flag_dashboard"]),
    ("schedule-slip", "Project behind schedule", "project",
     ["project.days_behind_schedule", "project.milestones_missed"], ["email_account_manager", "escalate_pm"]),
    ("renewal-at-risk", "Client renewal at risk", "client",
     ["client.days_to_renewal", "client.missed_last_milestone"], ["email_account_manager", "note_crm"]),
    ("ar-overdue", "Client has overdue receivables", "client",
     ["client.ar_overdue_amount"], ["email_account_manager", "note_accounting"]),
    ("submittal-critical-late", "Schedule-critical submittal overdue", "submittal",
     ["submittal.schedule_critical", "submittal.days_overdue"], ["escalate_pm", "flag_dashboard"]),
    ("vendor-late-pattern", "Vendor often late with submittals", "submittal",
     ["vendor.late_submittal_rate", "submittal.revision"], ["email_executives"]),
)  # fmt: skip


def fill_demo(*, now: dt.datetime | None = None, seed: int = 6) -> Load:
    """The demo-like company: three systems, 12 streams, the nine rules above, a week of activity."""
    load = fill(rules=0, now=now, seed=seed)
    versions = [publish_rule(*rule) for rule in DEMO_RULES]
    Rule.objects.filter(key="vendor-late-pattern").update(enabled=False)
    _activity(
        versions, now or timezone.now(), random.Random(seed), decisions_per_rule=300, escalations_per_rule=8
    )
    return Load(connections=load.connections, rules=[v.rule for v in versions], versions=versions)
