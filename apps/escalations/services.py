"""Escalation lifecycle: open or re-fire from a match, transitions by people, the outbox of actions.

Every state change writes an :class:`EscalationEvent` and an audit entry in the same transaction;
external actions are :class:`Delivery` rows queued after commit (and swept by beat, so a crash between
commit and queueing loses nothing).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.utils import timezone

from apps.accounts.roles import can_decide_approvals
from apps.audit.services import Actor, audit_append_many, audit_record
from apps.bulk import copy_rows
from apps.entities.models import ChangeOrder, Client, Document, Project, Submittal

from .actions import no_target_words, targets_for
from .delivery import decision_write_back, stakeholders_notify
from .models import Escalation, EscalationEvent
from .refire import open_escalations

if TYPE_CHECKING:
    from .noise import Notice


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
    _events([(escalation, kind, note, at, data)], actor, via)


# An event to record: the escalation, its kind, a note, when (None: now) and its data.
EventSpec = tuple[Escalation, str, str, "dt.datetime | None", dict[str, Any]]


def _events(
    specs: Sequence[EventSpec], actor: Actor, via: str, *, defer_audit: bool = False
) -> list[dict[str, Any]]:
    """Record events by one actor with their audit entries: one INSERT and one append to the chain.

    With ``defer_audit``, the entries are returned unrecorded, for the caller to append by the same
    actor when its transaction has taken every row lock it needs (the pipeline's audit batch).
    """
    if not specs:
        return []
    name = _actor_name(actor)
    now = timezone.now()
    copy_rows(
        EscalationEvent,
        [
            {
                "escalation_id": escalation.pk,
                "kind": kind,
                "actor": name,
                "via": via,
                "note": note,
                "data": data,
                "created_at": at or now,
            }
            for escalation, kind, note, at, data in specs
        ],
    )
    entries: list[dict[str, Any]] = [
        {
            "action": f"escalation.{kind}",
            "object_type": "escalation",
            "object_id": escalation.pk,
            "data": {
                "via": via,
                "note": note,
                "status": escalation.status,
                "outcome": escalation.outcome,
                **data,
            },
        }
        for escalation, kind, note, _at, data in specs
    ]
    if defer_audit:
        return entries
    if len(entries) == 1:  # a person's transition: no savepoint around a single append
        audit_record(actor=actor, **entries[0])
    else:
        audit_append_many(entries, actor=actor)
    return entries


Parties = tuple[str, "Project | None", "Client | None"]

# What labels and action targets read of a subject's project, its client and the client's owner;
# nothing else is loaded (a first run opens thousands of escalations, and parsing the rows' sync
# timestamps alone cost more than the rest).
_CLIENT_FIELDS = ("name", "source", "external_id", "owner__name", "owner__email")
_PROJECT_FIELDS = ("name", "number", "source", "external_id", *(f"client__{f}" for f in _CLIENT_FIELDS))


def _only(prefix: str, fields: Sequence[str]) -> list[str]:
    return [f"{prefix}{name}" for name in fields]


def subjects_parties(subject_type: str, subject_ids: Sequence[int]) -> dict[int, Parties]:
    """A human label for each subject and the project and client it belongs to, in one query. The
    clients come with their owners (the account manager's email is an action target). A missing
    subject raises DoesNotExist."""
    ids = set(subject_ids)
    found: dict[int, Parties] = {}
    if subject_type == "change_order":
        cos = ChangeOrder.objects.select_related("project__client__owner").only(
            "number", "title", *_only("project__", _PROJECT_FIELDS)
        )
        for co in cos.filter(pk__in=ids):
            project = co.project
            label = f"CO {co.number} {co.title} on {project}" if project else f"CO {co.number} {co.title}"
            found[co.pk] = (label, project, project.client if project else None)
        model: type[models.Model] = ChangeOrder
    elif subject_type == "submittal":
        submittals = Submittal.objects.select_related("project__client__owner").only(
            "number", "revision", *_only("project__", _PROJECT_FIELDS)
        )
        for sub in submittals.filter(pk__in=ids):
            found[sub.pk] = (str(sub), sub.project, sub.project.client if sub.project else None)
        model = Submittal
    elif subject_type == "document":
        documents = Document.objects.select_related("project__client__owner", "client__owner").only(
            "label", "external_id", *_only("project__", _PROJECT_FIELDS), *_only("client__", _CLIENT_FIELDS)
        )
        for doc in documents.filter(pk__in=ids):
            # "Document 10000 (change_order_request) on P-00013 Pier 9": what it is first, the tool's class
            # as the tool named it (a rule compares that name), then where it belongs.
            label = f"Document {doc.external_id}" + (f" ({doc.label})" if doc.label else "")
            label += f" on {doc.project}" if doc.project else ""
            found[doc.pk] = (label, doc.project, doc.project.client if doc.project else doc.client)
        model = Document
    elif subject_type == "project":
        for project in (
            Project.objects.select_related("client__owner").only(*_PROJECT_FIELDS).filter(pk__in=ids)
        ):
            found[project.pk] = (str(project), project, project.client)
        model = Project
    else:
        for client in Client.objects.select_related("owner").only(*_CLIENT_FIELDS).filter(pk__in=ids):
            found[client.pk] = (str(client), None, client)
        model = Client
    missing = ids - found.keys()
    if missing:
        raise model.DoesNotExist(f"{subject_type} {sorted(missing)[:10]} no longer exist")  # type: ignore[attr-defined]
    return found


def escalation_auto_resolve(
    *,
    rule_id: int,
    subject_type: str,
    subject_ids: list[int],
    now: dt.datetime,
) -> tuple[int, list[dict[str, Any]]]:
    """Close open escalations whose rule stopped matching (outcome ``auto_resolved``): how many, and
    their audit entries (actor ``system:rules``), unrecorded, for the pipeline's audit batch.
    """
    found = open_escalations(
        subject_type,
        [(rule_id, subject_id) for subject_id in subject_ids],
        lock=True,
        columns=["id", "rule_id", "subject_id", "status", "outcome", "closed_at"],
    )
    closing = list(found.values())
    if not closing:
        return 0, []
    Escalation.objects.filter(pk__in=[e.pk for e in closing]).update(
        status=Escalation.Status.RESOLVED, outcome=Escalation.Outcome.AUTO_RESOLVED, closed_at=now
    )
    for escalation in closing:
        escalation.status = Escalation.Status.RESOLVED
        escalation.outcome = Escalation.Outcome.AUTO_RESOLVED
        escalation.closed_at = now
    entries = _events(
        [(escalation, "resolved", "rule stopped matching", None, {}) for escalation in closing],
        "system:rules",
        "system",
        defer_audit=True,
    )
    return len(closing), entries


# --- transitions by people ----------------------------------------------------------------------

# What a person can do to an escalation, on every channel (API, pages, email links).
PERSON_ACTIONS = ("acknowledge", "note", "resolve", "dismiss", "approve", "reject")
DECISIONS = ("approve", "reject")


class DecisionRightsError(PermissionDenied):
    """The person's role may not take this action on this escalation (SPEC "Decision rights").

    A ``PermissionDenied``: the API answers 403 with its JSON error, pages and email links show the
    message; nothing is changed.
    """


class NotApplicable(TransitionError):
    """Approve or reject asked of anything but a change order on the executive route (the API's 409)."""


def awaits_executive_decision(escalation: Escalation) -> bool:
    """A change order routed to executives: only Executives and Administrators decide or close it."""
    return escalation.route == Escalation.Route.EXECUTIVE and escalation.subject_type == "change_order"


def _refusal(escalation: Escalation, action: str, *, decider: bool) -> Exception | None:
    """Why a person who may see the escalation may not take ``action`` on it (None: they may)."""
    if action not in PERSON_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if action in DECISIONS:
        if not decider:
            return DecisionRightsError("only Executives and Administrators approve or reject change orders")
        if not awaits_executive_decision(escalation):
            return NotApplicable(
                f"only change orders on the executive route are approved or rejected; this is a "
                f"{escalation.subject_type.replace('_', ' ')} on the {escalation.route} route"
            )
    elif action in ("resolve", "dismiss") and not decider and awaits_executive_decision(escalation):
        return DecisionRightsError(
            f"this change order waits for an executive decision: only Executives and Administrators may "
            f"{action} it (you may acknowledge it and add notes)"
        )
    return None


def escalation_rights_check(*, escalation: Escalation, actor: Actor, action: str) -> None:
    """Raise unless ``actor`` may take ``action`` on ``escalation`` (whatever its current state).

    The one place decision rights live: every transition below calls it, so the API, the pages, the
    email links and admin all refuse alike. System actors (``system:...``) pass the role checks, not
    the applicability of approve and reject.
    """
    person = not (actor is None or isinstance(actor, str))
    if person and not Escalation.objects.visible_to(actor).filter(pk=escalation.pk).exists():
        raise DecisionRightsError("this escalation is not about one of your clients")
    refusal = _refusal(escalation, action, decider=not person or can_decide_approvals(actor))
    if refusal is not None:
        raise refusal


def escalation_actions(escalation: Escalation, *, decider: bool) -> list[str]:
    """What a person who may see the escalation may do to it now, in display order: the buttons and
    email links offered (``decider``: an Executive or Administrator). No query: lists call it per row;
    the transitions check again under the row lock."""
    wanted = [*DECISIONS, "acknowledge", "resolve", "dismiss", "note"] if escalation.is_open else ["note"]
    return [
        action
        for action in wanted
        if not (action == "acknowledge" and escalation.status != Escalation.Status.OPEN)
        and _refusal(escalation, action, decider=decider) is None
    ]


def _locked(escalation: Escalation) -> Escalation:
    return Escalation.objects.select_for_update().get(pk=escalation.pk)


def _person_data(actor: Actor) -> dict[str, Any]:
    """The person's full name beside their username, so the timeline says "Approved by Elena Park"."""
    if actor is None or isinstance(actor, str) or not actor.is_authenticated:
        return {}
    name = str(getattr(actor, "get_full_name", lambda: "")()).strip()
    return {"actor_name": name} if name else {}


@transaction.atomic
def escalation_acknowledge(
    *, escalation: Escalation, actor: Actor, via: str = "web", note: str = ""
) -> Escalation:
    escalation_rights_check(escalation=escalation, actor=actor, action="acknowledge")
    escalation = _locked(escalation)
    if escalation.status != Escalation.Status.OPEN:
        raise TransitionError(f"escalation is {escalation.status}; only open escalations can be acknowledged")
    escalation.status = Escalation.Status.ACKNOWLEDGED
    escalation.acknowledged_at = timezone.now()
    escalation.save(update_fields=["status", "acknowledged_at"])
    _event(escalation, "acknowledged", actor, via, note, **_person_data(actor))
    stakeholders_notify(escalation=escalation, actor=actor)
    return escalation


@transaction.atomic
def escalation_note(*, escalation: Escalation, actor: Actor, note: str, via: str = "web") -> Escalation:
    """Add a note to the timeline (and the audit chain); the escalation's state does not change."""
    escalation_rights_check(escalation=escalation, actor=actor, action="note")
    if not note.strip():
        raise TransitionError("a note needs some text")
    escalation = _locked(escalation)
    _event(escalation, "noted", actor, via, note.strip(), **_person_data(actor))
    return escalation


def _close(
    escalation: Escalation,
    *,
    status: str,
    outcome: str,
    actor: Actor,
    via: str,
    note: str,
    kind: str | None = None,
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
    _event(escalation, kind or status, actor, via, note, outcome=outcome, **_person_data(actor))
    stakeholders_notify(escalation=escalation, actor=actor)
    return escalation


@transaction.atomic
def escalation_resolve(
    *, escalation: Escalation, actor: Actor, outcome: str, via: str = "web", note: str = ""
) -> Escalation:
    escalation_rights_check(escalation=escalation, actor=actor, action="resolve")
    if outcome in (Escalation.Outcome.APPROVED, Escalation.Outcome.REJECTED):
        # An approval is recorded only by approving (it is written back to the PM system).
        raise TransitionError(f"{outcome!r} is set by approving or rejecting, not by resolving")
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
    escalation_rights_check(escalation=escalation, actor=actor, action="dismiss")
    if outcome in (Escalation.Outcome.APPROVED, Escalation.Outcome.REJECTED):
        raise TransitionError(f"{outcome!r} is set by approving or rejecting, not by dismissing")
    return _close(
        escalation, status=Escalation.Status.DISMISSED, outcome=outcome, actor=actor, via=via, note=note
    )


@transaction.atomic
def escalation_decide(
    *, escalation: Escalation, actor: Actor, approve: bool, via: str = "web", note: str = ""
) -> Escalation:
    """An executive (or administrator) approves or rejects a change order routed to executives.

    Final: no undo window. The decision is written back to the PM system and the stakeholders are told
    as soon as it commits, so the pages ask for confirmation (with the amount) before calling this.
    """
    escalation_rights_check(escalation=escalation, actor=actor, action="approve" if approve else "reject")
    outcome = Escalation.Outcome.APPROVED if approve else Escalation.Outcome.REJECTED
    escalation = _close(
        escalation,
        status=Escalation.Status.RESOLVED,
        outcome=outcome,
        actor=actor,
        via=via,
        note=note,
        kind=str(outcome),
    )
    # The decision goes back to the PM system through the outbox (a Procore outage delays it, loses nothing).
    decision_write_back(escalation=escalation)
    return escalation


# --- the outbox -----------------------------------------------------------------------------------


# The notices one escalation's actions send, and the events of actions that had no target.
Planned = tuple[list["Notice"], list[EventSpec]]


def actions_plan(items: Sequence[tuple[Escalation, Sequence[str]]]) -> list[Planned]:
    """What each escalation's rule actions become: outbox notices, or an ``action_skipped`` event when
    an action has no target. Targets are looked up once per action for all the escalations."""
    from .noise import Notice

    wanted: dict[str, list[int]] = defaultdict(list)
    for index, (_escalation, actions) in enumerate(items):
        for action in dict.fromkeys(actions):
            wanted[action].append(index)
    targets: dict[tuple[int, str], list[str]] = {}
    for action, indexes in wanted.items():
        per_escalation = targets_for(action, [items[i][0] for i in indexes])
        targets.update(((i, action), t) for i, t in zip(indexes, per_escalation, strict=True))
    planned: list[Planned] = []
    for index, (escalation, actions) in enumerate(items):
        notices: list[Notice] = []
        skipped: list[EventSpec] = []
        for action in actions:
            found = targets[(index, action)]
            if not found:
                skipped.append(
                    (escalation, "action_skipped", no_target_words(action), None, {"action": action})
                )
            notices.extend(
                Notice(action, target, f"esc{escalation.pk}:{action}:{target}"[:120]) for target in found
            )
        planned.append((notices, skipped))
    return planned


def _queue_actions(escalation: Escalation, actions: list[str], now: dt.datetime) -> None:
    from .noise import notify

    [(notices, skipped)] = actions_plan([(escalation, actions)])
    _events(skipped, "system:rules", "system")
    # Emails to people pass the noise controls (digest, quiet hours, hourly cap); the rest go straight out.
    notify(escalation=escalation, notices=notices, now=now, new=True)
