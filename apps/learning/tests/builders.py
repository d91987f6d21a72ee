"""Helpers that write rules, decisions and escalations directly, for fixtures of known shape."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django.utils import timezone

from apps.connectors.models import Connection, StreamState
from apps.escalations.models import Escalation
from apps.rules.evaluation.facts import ENTITY_STREAMS
from apps.rules.evaluation.services import rule_publish
from apps.rules.models import Decision, Rule, RuleVersion
from tests.factories import ConnectionFactory

T0 = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)


def publish(
    key: str, when: dict[str, Any], *, subject: str = "project", route: str = "standard"
) -> RuleVersion:
    """Create or change rule ``key`` and publish it; returns the new live version."""
    draft = {
        "key": key,
        "name": key,
        "subject": subject,
        "when": when,
        "route": route,
        "severity": "high",
        "max_fact_age": "24h",
    }
    rule, created = Rule.objects.get_or_create(
        key=key, defaults={"name": key, "subject_type": subject, "draft": draft}
    )
    if not created:
        rule.draft = draft
        rule.save(update_fields=["draft"])
    return rule_publish(rule=rule, actor="system:test")


def snapshot(**values: Any) -> dict[str, dict[str, Any]]:
    """``{"project.margin_pct": "12.5"}`` style values (dots as double underscores) → a fresh snapshot."""
    return {name.replace("__", "."): {"value": value, "age_s": 0.0} for name, value in values.items()}


def decision(
    version: RuleVersion,
    subject_id: int,
    *,
    outcome: str = "matched",
    at: dt.datetime = T0,
    facts: dict[str, Any] | None = None,
    subject_type: str = "project",
) -> Decision:
    return Decision(
        rule_version=version,
        subject_type=subject_type,
        subject_id=subject_id,
        outcome=outcome,
        trigger="sync",
        evaluated_at=at,
        facts=facts,
        explanation={"outcome": outcome} if facts is not None else None,
        summary=f"{outcome} on {subject_id}",
    )


def escalation(
    version: RuleVersion,
    subject_id: int,
    *,
    opened: dt.datetime = T0,
    ack_after: dt.timedelta | None = None,
    closed_after: dt.timedelta | None = None,
    outcome: str = "",
    route: str | None = None,
    client: Any = None,
    subject_type: str = "project",
    facts: dict[str, Any] | None = None,
) -> Escalation:
    status = "open"
    if ack_after is not None:
        status = "acknowledged"
    if closed_after is not None:
        status = "dismissed" if outcome in ("false_alarm", "duplicate", "no_action_needed") else "resolved"
    return Escalation(
        rule_id=version.rule_id,
        rule_version=version,
        subject_type=subject_type,
        subject_id=subject_id,
        subject_label=f"{subject_type} {subject_id}",
        client=client,
        route=route or version.route,
        severity="high",
        priority=100,
        status=status,
        outcome=outcome,
        summary="test",
        evidence_copy={"facts": facts or {}},
        opened_at=opened,
        last_fired_at=opened,
        acknowledged_at=opened + ack_after if ack_after is not None else None,
        closed_at=opened + closed_after if closed_after is not None else None,
    )


def fresh_streams() -> None:
    """Every stream synced five minutes ago, so live evaluation sees fresh facts."""
    synced = timezone.now() - dt.timedelta(minutes=5)
    for entity, streams in ENTITY_STREAMS.items():
        source = cast(Connection, ConnectionFactory(slug=f"src-{entity}"))
        for stream in streams:
            StreamState.objects.update_or_create(
                connection=source, stream=stream, defaults={"last_success_at": synced}
            )


def now() -> dt.datetime:
    return timezone.now()


def thin_history() -> Rule:
    """Rule ``thin`` (margin < 25) over nine days: margins 5, 10, ..., 45 one per day; the ones under 15
    acted on, 15 and 20 false alarms. The draft says margin < 12."""
    version = publish("thin", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 25}]})
    decisions, escalations = [], []
    for i, margin in enumerate(range(5, 50, 5)):
        at = T0 + dt.timedelta(days=i)
        facts = snapshot(project__margin_pct=str(margin))
        matched = margin < 25
        decisions.append(
            decision(version, i + 1, at=at, facts=facts, outcome="matched" if matched else "not_matched")
        )
        if matched:
            escalations.append(
                escalation(version, i + 1, opened=at, closed_after=dt.timedelta(hours=2), facts=facts,
                           outcome="actioned" if margin < 15 else "false_alarm")
            )  # fmt: skip
    Decision.objects.bulk_create(decisions)
    Escalation.objects.bulk_create(escalations)
    rule = Rule.objects.get(key="thin")
    draft = dict(rule.draft)
    draft["when"] = {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 12}]}
    rule.draft = draft
    rule.save()
    return rule
