"""Reported misses: a person says a subject should have been escalated, and what was done about it.

Who may report (SPEC "Who uses it"): operations managers, executives and administrators on any
subject; an account manager only on subjects of the clients they own (their own queue); nobody else.
A miss is judged on the facts of its time: the newest stored decision context of the subject at or
before ``missed_at``, else the subject's bulk-run snapshot if it was taken before then, else its facts
computed now (said so in ``facts_from``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts.roles import ACCOUNT_MANAGERS, ADMINISTRATORS, EXECUTIVES, OPERATIONS, in_role
from apps.audit.services import audit_record
from apps.rules.models import ContextSnapshot, Decision, Rule

from .models import ReportedMiss

SUBJECT_TYPES: Final = ("project", "change_order", "submittal", "client", "document")


def _subjects(subject_type: str) -> Any:
    """The subjects of a type with what ``can_report`` reads of them; ``ObjectDoesNotExist`` for an
    unknown type."""
    from apps.entities.models import ChangeOrder, Client, Document, Project, Submittal

    models = {"project": Project, "change_order": ChangeOrder, "submittal": Submittal, "client": Client}
    model = {**models, "document": Document}.get(subject_type)
    if model is None:
        raise ObjectDoesNotExist(f"unknown subject type {subject_type!r}; one of {', '.join(SUBJECT_TYPES)}")
    related = {
        "project": ["client__owner"],
        "client": ["owner"],
        "document": ["client__owner", "project__client__owner"],  # its own client, else its project's
    }.get(subject_type, ["project__client__owner"])
    return model.objects.select_related(*related)


def subject_of(subject_type: str, subject_id: int) -> Any:
    """The subject with what ``can_report`` reads of it; ``ObjectDoesNotExist`` saying which is missing."""
    subject = _subjects(subject_type).filter(pk=subject_id).first()
    if subject is None:
        raise ObjectDoesNotExist(f"no {subject_type.replace('_', ' ')} {subject_id}")
    return subject


def subject_label(subject_type: str, subject: Any) -> str:
    if subject_type in ("project", "client"):
        return str(subject.name)
    if subject_type == "document":
        return f"document {subject.external_id} ({subject.label or 'not classified'})"
    words = subject_type.replace("_", " ")
    return f"{words} {subject.number or subject.pk} {subject.title}".strip()


def find_subjects(subject_type: str, text: str, user: Any, *, limit: int = 6) -> list[Any]:
    """The subjects of ``subject_type`` that ``text`` names, at most ``limit``: what people call them
    (a project's number or name, a change order's or submittal's number, optionally after its project's
    number, e.g. ``P-104 CO-7``; a client's name; a document's id in the tool that read it; all
    case-insensitive) and Fulcrum's own number, given as
    ``#123`` (only it) or bare digits (it, besides any reference of those digits).

    A name is looked up only among the subjects ``user`` may report on, so a list of candidates never
    shows an account manager another manager's clients; Fulcrum's number is looked up among all (the
    caller refuses what the user may not report, as for a link)."""
    from django.db.models import Q

    text = " ".join(text.split())
    if not text or subject_type not in SUBJECT_TYPES:
        return []
    own = text[1:] if text.startswith("#") else text
    found: list[Any] = []
    if own.isdigit():
        found += _subjects(subject_type).filter(pk=int(own))
        if text.startswith("#"):
            return found
    me = getattr(user, "pk", None)
    if subject_type == "client":
        names, mine = Q(name__iexact=text), Q(owner__user_id=me)
    elif subject_type == "project":
        names, mine = Q(number__iexact=text) | Q(name__iexact=text), Q(client__owner__user_id=me)
    elif subject_type == "document":
        names = Q(external_id__iexact=text)
        mine = Q(client__owner__user_id=me) | Q(client=None, project__client__owner__user_id=me)
    else:
        names, mine = Q(number__iexact=text), Q(project__client__owner__user_id=me)
        project_ref, _, own_ref = text.rpartition(" ")
        if project_ref:
            names |= Q(number__iexact=own_ref, project__number__iexact=project_ref)
    named = _subjects(subject_type).filter(names)
    if not in_role(user, OPERATIONS, EXECUTIVES, ADMINISTRATORS):
        named = named.filter(mine)
    seen = {s.pk for s in found}
    found += [s for s in named.order_by("pk")[:limit] if s.pk not in seen]
    return found[:limit]


def candidate_label(subject_type: str, subject: Any) -> str:
    """``subject_label`` with what tells two apart: the project of a change order or submittal and
    Fulcrum's number, which picks it (``#123``)."""
    label = subject_label(subject_type, subject)
    project = getattr(subject, "project", None) if subject_type != "project" else None
    if project is not None:
        label += f" on {project.number or project.name}"
    return f"{label} (#{subject.pk})"


def _owner_user_id(subject_type: str, subject: Any) -> int | None:
    if subject_type == "client":
        client = subject
    elif subject_type == "project":
        client = subject.client
    else:  # a document's own client first, else its project's
        client = getattr(subject, "client", None) or getattr(subject.project, "client", None)
    owner = getattr(client, "owner", None)
    return getattr(owner, "user_id", None)


def can_report(user: Any, subject_type: str | None = None, subject: Any = None) -> bool:
    """Whether ``user`` may report a miss (on ``subject``, when given)."""
    if in_role(user, OPERATIONS, EXECUTIVES, ADMINISTRATORS):
        return True
    if not in_role(user, ACCOUNT_MANAGERS):
        return False
    if subject is None:
        return True  # may report on their own clients' subjects
    return _owner_user_id(str(subject_type), subject) == user.pk


def facts_as_of(subject_type: str, subject_id: int, at: dt.datetime) -> tuple[dict[str, Any], str]:
    """The subject's stored facts as of ``at`` and where they came from."""
    stored = (
        Decision.objects.filter(
            subject_type=subject_type, subject_id=subject_id, evaluated_at__lte=at, facts__isnull=False
        )
        .order_by("-evaluated_at", "-id")
        .values_list("facts", flat=True)
        .first()
    )
    if stored:
        return stored, "decision"
    snap = (
        ContextSnapshot.objects.filter(
            subject_type=subject_type, subject_id=subject_id, run__evaluated_at__lte=at
        )
        .select_related("run")
        .first()
    )
    if snap is not None:
        ages = snap.run.ages or {}
        values = snap.values
        if isinstance(values, list):
            values = dict(zip(sorted(ages), values, strict=True))
        return {k: {"value": v, "age_s": ages.get(k)} for k, v in values.items()}, "bulk run"
    from apps.rules.evaluation.facts import compute_contexts

    for context in compute_contexts(subject_type, [subject_id]):
        return context.snapshot(), "computed when reported"
    return {}, "none"


@transaction.atomic
def miss_report(
    *,
    subject_type: str,
    subject_id: int,
    outcome: str,
    actor: Any,
    missed_at: dt.datetime | None = None,
    rule: Rule | None = None,
    note: str = "",
) -> ReportedMiss:
    """Record a miss with the facts of its time, audited; refuses what the actor may not report."""
    subject = subject_of(subject_type, subject_id)
    if not can_report(actor, subject_type, subject):
        raise PermissionDenied("You may report misses only on subjects you can see.")
    if outcome not in ReportedMiss.Outcome.values:
        raise ValidationError(f"outcome must be one of {', '.join(ReportedMiss.Outcome.values)}")
    if rule is not None and rule.subject_type != subject_type:
        raise ValidationError(f"rule {rule.key} is about {rule.subject_type}, not {subject_type}")
    now = timezone.now()
    missed_at = missed_at or now
    if missed_at > now:
        raise ValidationError("a miss cannot be in the future")
    facts, source = facts_as_of(subject_type, subject_id, missed_at)
    miss = ReportedMiss.objects.create(
        subject_type=subject_type,
        subject_id=subject_id,
        subject_label=subject_label(subject_type, subject)[:300],
        rule=rule,
        outcome=outcome,
        note=note,
        missed_at=missed_at,
        facts=facts,
        facts_from=source,
        reported_at=now,
        reported_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    audit_record(
        action="miss.reported",
        actor=actor,
        object_type="reported_miss",
        object_id=miss.pk,
        data={
            "subject": f"{subject_type}:{subject_id}",
            "rule": rule.key if rule else None,
            "outcome": outcome,
            "missed_at": missed_at.isoformat(),
            "facts_from": source,
        },
    )
    return miss
