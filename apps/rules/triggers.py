"""What to re-evaluate when entities change: each change marks the subjects that depend on it."""

from __future__ import annotations

from functools import partial

from django.db import transaction

from apps.entities.models import ChangeOrder, Project, Submittal

SUBJECTS = ("change_order", "project", "client", "submittal")


def affected_subjects(changes: dict[str, set[int]]) -> dict[str, set[int]]:
    """Map changed entity ids to the subjects whose facts read them (coalesced per call)."""
    projects = set(changes.get("project", set()))
    clients = set(changes.get("client", set()))
    # Money, milestones and change orders are project facts; milestones also feed client facts.
    for entity, model in (
        ("financial_line", "money"),
        ("milestone", "milestones"),
        ("change_order", "change_orders"),
    ):
        if ids := changes.get(entity):
            projects |= set(Project.objects.filter(**{f"{model}__id__in": ids}).values_list("id", flat=True))
    if projects:
        clients |= set(
            Project.objects.filter(id__in=projects, client__isnull=False).values_list("client_id", flat=True)
        )
    if clients:
        projects |= set(Project.objects.filter(client_id__in=clients).values_list("id", flat=True))
    change_orders = set(changes.get("change_order", set()))
    change_orders |= set(ChangeOrder.objects.filter(project_id__in=projects).values_list("id", flat=True))
    submittals = set(changes.get("submittal", set()))
    submittals |= set(Submittal.objects.filter(project_id__in=projects).values_list("id", flat=True))
    if vendors := changes.get("vendor"):
        submittals |= set(Submittal.objects.filter(vendor_id__in=vendors).values_list("id", flat=True))
    return {"change_order": change_orders, "project": projects, "client": clients, "submittal": submittals}


def on_entities_changed(changes: dict[str, set[int]], trigger: str = "sync") -> dict[str, int]:
    """Queue evaluation of the affected subjects after the current transaction commits."""
    from .tasks import evaluate_subjects_task

    affected = affected_subjects(changes)
    for subject_type, ids in affected.items():
        if ids:
            transaction.on_commit(partial(evaluate_subjects_task.delay, subject_type, sorted(ids), trigger))
    return {k: len(v) for k, v in affected.items()}
