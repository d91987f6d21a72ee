"""A link or a merge decided in the review queue can be undone there, audited like the decision."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.connectors.models import Connection
from apps.entities.models import Client, MatchCandidate, ResolutionSettings
from apps.entities.resolution import candidate_link, candidate_merge, candidate_undo, entities_resolve
from apps.escalations.tests.helpers import make_escalation
from tests.factories import ClientFactory, ProjectFactory

from .test_resolution import accounting, crosswalk  # noqa: F401 - the fixture is used by name

Status = MatchCandidate.Status


def test_undoing_a_link_unlinks_the_record_and_reopens_the_proposals(
    accounting: Connection,  # noqa: F811
    administrator: Any,
    ops_manager: Any,
) -> None:
    a = ClientFactory(name="Riverside Builders")
    ClientFactory(name="Riverside Builder Supply")
    so = crosswalk(accounting, "customer", "c2", "Riverside Builders Supply Co")
    ResolutionSettings.objects.create(auto_link_threshold=99, review_threshold=60)
    entities_resolve(propagate=False)
    before = dict(so.candidates.values_list("pk", "status"))
    chosen = so.candidates.get(client=a)
    candidate_link(candidate=chosen, actor=administrator)

    candidate_undo(candidate=chosen, actor=ops_manager)

    so.refresh_from_db()
    assert so.client_id is None and so.match_method == ""
    assert dict(so.candidates.values_list("pk", "status")) == before  # every proposal pending again
    chosen.refresh_from_db()
    assert chosen.decided_by is None and chosen.undo == {}
    entry = AuditEntry.objects.get(action="entities.match_link_undone")
    assert entry.actor_user_id == ops_manager.pk and entry.object_id == str(so.pk)
    assert entry.data["client"] == a.pk and entry.data["decided_by"] == administrator.pk
    # Decided again afterwards, as if new.
    candidate_link(candidate=chosen, actor=ops_manager)
    so.refresh_from_db()
    assert so.client == a


def test_undoing_a_merge_moves_everything_back_and_revives_the_duplicate(
    accounting: Connection,  # noqa: F811
    administrator: Any,
) -> None:
    so = crosswalk(accounting, "customer", "c9", "Harbour View Dental")
    entities_resolve(propagate=False)
    so.refresh_from_db()
    duplicate = so.client
    project = ProjectFactory(client=duplicate)
    other_so = crosswalk(
        accounting, "customer", "c10", "HVD billing", client=duplicate, match_method="review"
    )
    escalation = make_escalation()
    escalation.client = duplicate
    escalation.save(update_fields=["client"])
    survivor = ClientFactory(name="Harbor View Dental")
    already_there = ProjectFactory(client=survivor)  # the survivor's own rows stay
    entities_resolve(propagate=False)
    candidate = so.candidates.get()
    candidate_merge(candidate=candidate, actor=administrator)

    candidate_undo(candidate=candidate, actor=administrator)

    for obj in (so, other_so, project, duplicate, candidate, escalation, already_there):
        obj.refresh_from_db()
    assert duplicate.merged_into is None and duplicate.deleted_at is None
    assert so.client == duplicate and so.match_method == "new"
    assert other_so.client == duplicate and project.client == duplicate and escalation.client == duplicate
    assert already_there.client == survivor
    assert candidate.status == Status.PENDING
    entry = AuditEntry.objects.get(action="entities.merge_undone")
    assert entry.data["restored"]["entities.project.client"] == 1
    assert entry.data["restored"]["escalations.escalation.client"] == 1


def test_a_merge_merged_elsewhere_since_is_not_undone(accounting: Connection, administrator: Any) -> None:  # noqa: F811
    so = crosswalk(accounting, "customer", "c9", "Harbour View Dental")
    entities_resolve(propagate=False)
    so.refresh_from_db()
    survivor = ClientFactory(name="Harbor View Dental")
    entities_resolve(propagate=False)
    candidate = so.candidates.get()
    candidate_merge(candidate=candidate, actor=administrator)
    Client.objects.filter(pk=so.client_id).update(merged_into=ClientFactory())  # moved on since
    with pytest.raises(ValueError, match="no longer merged"):
        candidate_undo(candidate=candidate, actor=administrator)
    candidate.refresh_from_db()
    assert candidate.status == Status.MERGED and survivor.merged_into is None


def test_pending_or_rejected_pairs_have_nothing_to_undo(accounting: Connection, administrator: Any) -> None:  # noqa: F811
    ClientFactory(name="Riverside Builders")
    so = crosswalk(accounting, "customer", "c2", "Riverside Builders Co")
    ResolutionSettings.objects.create(auto_link_threshold=100, review_threshold=50)
    entities_resolve(propagate=False)
    with pytest.raises(ValueError, match="only a link or a merge"):
        candidate_undo(candidate=so.candidates.get(), actor=administrator)


def test_the_review_queue_undoes_from_admin(accounting: Connection, ops_manager: Any, client: Any) -> None:  # noqa: F811
    a = ClientFactory(name="Northwind Electric")
    so = crosswalk(accounting, "customer", "c1", "Northwind Electrical")
    ResolutionSettings.objects.create(auto_link_threshold=100, review_threshold=50)
    entities_resolve(propagate=False)
    candidate = so.candidates.get(client=a)
    client.force_login(ops_manager)
    url = reverse("admin:entities_matchcandidate_changelist")
    client.post(url, {"action": "link_selected", "_selected_action": [candidate.pk]})
    so.refresh_from_db()
    assert so.client == a
    response = client.post(url, {"action": "undo_selected", "_selected_action": [candidate.pk]}, follow=True)
    assert "Undid 1 decision(s)" in response.content.decode()
    so.refresh_from_db()
    candidate.refresh_from_db()
    assert so.client is None and candidate.status == Status.PENDING
    assert AuditEntry.objects.filter(
        action="entities.match_link_undone", actor_user_id=ops_manager.pk
    ).exists()
