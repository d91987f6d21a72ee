"""Escalation lifecycle: open or re-fire from a match, transitions by people, the outbox of actions.

Every state change writes an :class:`EscalationEvent` and an audit entry in the same transaction;
external actions are :class:`Delivery` rows queued after commit (and swept by beat, so a crash between
commit and queueing loses nothing).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.roles import EXECUTIVES, can_decide_approvals
from apps.audit.services import Actor, audit_record
from apps.entities.models import ChangeOrder, Client, Project, SourceObject, Submittal

from .delivery import decision_write_back, stakeholders_notify
from .models import Escalation, EscalationEvent
from .outbound import pm_targets, webhook_targets
from .refire import REFIRED, escalation_evidence

if TYPE_CHECKING:
    from apps.rules.evaluator import Evaluation
    from apps.rules.facts import Context
    from apps.rules.models import Decision, RuleVersion


class TransitionError(Exception):
    """The escalation is not in a state that allows this."""


def _actor_name(actor: Actor) -> str:
    if actor is None or isinstance(actor, str):
        return actor or "system"
    return actor.get_username() if actor.is_authenticated else "anonymous"


def _event(
    escalation: Escalation,
    kind: str,
    actor: Actor,
    via: str,
    note: str = "",
    *,
    at: dt.datetime | None = None,
    **data: Any,
) -> None:
    now = at or timezone.now()
    EscalationEvent.objects.create(
        escalation=escalation,
        kind=kind,
        actor=_actor_name(actor),
        via=via,
        note=note,
        data=data,
        created_at=now,
    )
    audit_record(
        action=f"escalation.{kind}",
        actor=actor,
        object_type="escalation",
        object_id=escalation.pk,
        data={"via": via, "note": note, "status": escalation.status, "outcome": escalation.outcome, **data},
    )


def subject_parties(subject_type: str, subject_id: int) -> tuple[str, Project | None, Client | None]:
    """A human label for the subject and the project and client it belongs to."""
    if subject_type == "change_order":
        co = ChangeOrder.objects.select_related("project__client").get(pk=subject_id)
        project = co.project
        label = f"CO {co.number} {co.title} on {project}" if project else f"CO {co.number} {co.title}"
        return label, project, project.client if project else None
    if subject_type == "submittal":
        sub = Submittal.objects.select_related("project__client").get(pk=subject_id)
        return str(sub), sub.project, sub.project.client if sub.project else None
    if subject_type == "project":
        project = Project.objects.select_related("client").get(pk=subject_id)
        return str(project), project, project.client
    client = Client.objects.get(pk=subject_id)
    return str(client), None, client


def escalation_fire(
    *, version: RuleVersion, context: Context, evaluation: Evaluation, decision: Decision, now: dt.datetime
) -> str:
    """Open an escalation for a match, or bump the open one. Returns opened / refired / cooldown.

    The partial unique index on open (rule, subject) is the race-safe claim: of two concurrent
    evaluations, one INSERT wins and the other becomes a re-fire.
    """
    from apps.rules.durations import parse_duration
    from apps.rules.models import SubjectState

    from .policies import policy_start

    evidence = escalation_evidence(version, context, evaluation)
    key = {"rule_id": version.rule_id, "subject_type": context.subject_type, "subject_id": context.subject_id}
    existing = Escalation.objects.select_for_update().filter(**key, status__in=Escalation.OPEN_STATES).first()
    if existing is None:
        state = SubjectState.objects.filter(**key).only("cooldown_until").first()
        if state and state.cooldown_until and state.cooldown_until > now:
            decision.suppressed = f"cooldown until {state.cooldown_until:%Y-%m-%d %H:%M}"
            decision.save(update_fields=["suppressed"])
            return "cooldown"
        label, project, client = subject_parties(context.subject_type, context.subject_id)
        try:
            with transaction.atomic():
                escalation = Escalation.objects.create(
                    rule_id=version.rule_id,
                    rule_version=version,
                    subject_type=context.subject_type,
                    subject_id=context.subject_id,
                    subject_label=label[:300],
                    client=client,
                    project=project,
                    route=version.route,
                    severity=version.spec.get("severity", "medium"),
                    priority=int(version.spec.get("priority", 100)),
                    summary=evaluation.summary(),
                    evidence=evidence,
                    opened_evidence=evidence,
                    opened_at=now,
                    last_fired_at=now,
                )
        except IntegrityError:
            existing = Escalation.objects.select_for_update().get(**key, status__in=Escalation.OPEN_STATES)
        else:
            cooldown = parse_duration(version.spec.get("cooldown", "7d"))
            SubjectState.objects.filter(**key).update(cooldown_until=now + cooldown)
            decision.escalation = escalation
            decision.save(update_fields=["escalation"])
            _event(
                escalation,
                "opened",
                "system:rules",
                "system",
                at=now,
                rule=version.rule.key,
                version=version.number,
                route=escalation.route,
            )
            # The policy is frozen before the first actions: its digest setting decides how they go out.
            policy_start(escalation=escalation, now=now)
            _queue_actions(escalation, version.actions, now)
            return "opened"
    existing.fire_count += 1
    existing.last_fired_at = now
    existing.evidence = evidence
    existing.summary = evaluation.summary()
    existing.save(update_fields=["fire_count", "last_fired_at", "evidence", "summary"])
    decision.escalation = existing
    decision.suppressed = REFIRED
    decision.save(update_fields=["escalation", "suppressed"])
    return "refired"


def escalation_auto_resolve(
    *, rule_id: int, subject_type: str, subject_ids: list[int], now: dt.datetime
) -> int:
    """Close open escalations whose rule stopped matching (outcome ``auto_resolved``)."""
    count = 0
    for escalation in Escalation.objects.select_for_update().filter(
        rule_id=rule_id,
        subject_type=subject_type,
        subject_id__in=subject_ids,
        status__in=Escalation.OPEN_STATES,
    ):
        escalation.status = Escalation.Status.RESOLVED
        escalation.outcome = Escalation.Outcome.AUTO_RESOLVED
        escalation.closed_at = now
        escalation.save(update_fields=["status", "outcome", "closed_at"])
        _event(escalation, "resolved", "system:rules", "system", note="rule stopped matching")
        count += 1
    return count


# --- transitions by people ----------------------------------------------------------------------


def _check_can_act(escalation: Escalation, actor: Actor) -> None:
    if isinstance(actor, str) or actor is None:
        return
    if not Escalation.objects.visible_to(actor).filter(pk=escalation.pk).exists():
        raise PermissionDenied("not your escalation")


def _locked(escalation: Escalation) -> Escalation:
    return Escalation.objects.select_for_update().get(pk=escalation.pk)


@transaction.atomic
def escalation_acknowledge(
    *, escalation: Escalation, actor: Actor, via: str = "web", note: str = ""
) -> Escalation:
    _check_can_act(escalation, actor)
    escalation = _locked(escalation)
    if escalation.status != Escalation.Status.OPEN:
        raise TransitionError(f"escalation is {escalation.status}; only open escalations can be acknowledged")
    escalation.status = Escalation.Status.ACKNOWLEDGED
    escalation.acknowledged_at = timezone.now()
    escalation.save(update_fields=["status", "acknowledged_at"])
    _event(escalation, "acknowledged", actor, via, note)
    stakeholders_notify(escalation=escalation, actor=actor)
    return escalation


def _close(
    escalation: Escalation, *, status: str, outcome: str, actor: Actor, via: str, note: str
) -> Escalation:
    if outcome not in Escalation.Outcome.values or outcome == Escalation.Outcome.AUTO_RESOLVED:
        raise TransitionError(f"{outcome!r} is not an outcome a person can set")
    escalation = _locked(escalation)
    if not escalation.is_open:
        raise TransitionError(f"escalation is already {escalation.status}")
    escalation.status = status
    escalation.outcome = outcome
    escalation.closed_at = timezone.now()
    escalation.save(update_fields=["status", "outcome", "closed_at"])
    _event(escalation, status, actor, via, note, outcome=outcome)
    stakeholders_notify(escalation=escalation, actor=actor)
    return escalation


@transaction.atomic
def escalation_resolve(
    *, escalation: Escalation, actor: Actor, outcome: str, via: str = "web", note: str = ""
) -> Escalation:
    _check_can_act(escalation, actor)
    return _close(
        escalation, status=Escalation.Status.RESOLVED, outcome=outcome, actor=actor, via=via, note=note
    )


@transaction.atomic
def escalation_dismiss(
    *,
    escalation: Escalation,
    actor: Actor,
    outcome: str = Escalation.Outcome.FALSE_ALARM,
    via: str = "web",
    note: str = "",
) -> Escalation:
    _check_can_act(escalation, actor)
    return _close(
        escalation, status=Escalation.Status.DISMISSED, outcome=outcome, actor=actor, via=via, note=note
    )


@transaction.atomic
def escalation_decide(
    *, escalation: Escalation, actor: Actor, approve: bool, via: str = "web", note: str = ""
) -> Escalation:
    """An executive approves or rejects an item routed to them."""
    if not isinstance(actor, str) and actor is not None and not can_decide_approvals(actor):
        raise PermissionDenied("only executives decide executive approvals")
    if escalation.route != Escalation.Route.EXECUTIVE:
        raise TransitionError("only executive-routed escalations are approved or rejected")
    outcome = Escalation.Outcome.APPROVED if approve else Escalation.Outcome.REJECTED
    escalation = _close(
        escalation, status=Escalation.Status.RESOLVED, outcome=outcome, actor=actor, via=via, note=note
    )
    # The decision goes back to the PM system through the outbox (a Procore outage delays it, loses nothing).
    decision_write_back(escalation=escalation)
    return escalation


# --- the outbox -----------------------------------------------------------------------------------


def action_targets(escalation: Escalation, action: str) -> list[str]:
    """Where one action goes for this escalation: email addresses or upstream record references."""
    client = escalation.client
    if action == "email_account_manager":
        owner = client.owner if client else None
        return [owner.email] if owner and owner.email else []
    if action == "email_executives":
        users = get_user_model().objects.filter(groups__name=EXECUTIVES, is_active=True).exclude(email="")
        return sorted({u.email for u in users})
    if action == "flag_dashboard":
        return ["dashboard"]
    if action == "note_crm":
        return [f"{client.source_id}:{client.external_id}"] if client else []
    if action == "note_accounting":
        links = SourceObject.objects.filter(client=client, object_type="customer", deleted_at__isnull=True)
        return [f"{link.connection_id}:{link.external_id}" for link in links] if client else []
    if action == "escalate_pm":
        return pm_targets(escalation)
    if action == "webhook":
        return webhook_targets()
    return []


def _queue_actions(escalation: Escalation, actions: list[str], now: dt.datetime) -> None:
    from .noise import Notice, notify

    notices: list[Notice] = []
    for action in actions:
        targets = action_targets(escalation, action)
        if not targets:
            _event(
                escalation,
                "action_skipped",
                "system:rules",
                "system",
                note=f"{action}: no target",
                action=action,
            )
        notices.extend(
            Notice(action, target, f"esc{escalation.pk}:{action}:{target}"[:120]) for target in targets
        )
    # Emails to people pass the noise controls (digest, quiet hours, hourly cap); the rest go straight out.
    notify(escalation=escalation, notices=notices, now=now, new=True)
