"""Fuzzy entity resolution: thresholds route pairs, decisions are remembered, merges move everything."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.connectors.models import Connection
from apps.entities import resolution
from apps.entities.linking import link_entities
from apps.entities.models import (
    ChangeOrder,
    Client,
    FinancialLine,
    MatchCandidate,
    Project,
    ResolutionSettings,
    SourceObject,
)
from apps.entities.resolution import (
    candidate_link,
    candidate_merge,
    candidate_reject,
    entities_resolve,
    entity_merge,
    normalise_name,
    score_pairs,
)
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
)

Status = MatchCandidate.Status


def crosswalk(
    connection: Connection, object_type: str, external_id: str, name: str, **extra: Any
) -> SourceObject:
    now = timezone.now()
    return SourceObject.objects.create(
        connection=connection,
        object_type=object_type,
        external_id=external_id,
        name=name,
        source_updated_at=now,
        content_hash="0" * 32,
        synced_at=now,
        **extra,
    )


@pytest.fixture
def accounting(db: None) -> Connection:
    return ConnectionFactory(slug="accounting", kind="quickbooks")


def actions(*names: str) -> list[str]:
    return list(AuditEntry.objects.filter(action__in=names).values_list("action", flat=True))


def test_normalise_name_drops_case_punctuation_and_legal_suffixes() -> None:
    assert normalise_name("The ACME Construction, Inc.") == "acme construction"
    assert normalise_name("Smith & Sons, L.L.C.") == "smith and sons l l c"
    assert normalise_name("Northwind Co") == "northwind"


def test_thresholds_route_pairs_to_auto_link_review_and_new_entity(accounting: Connection) -> None:
    acme = ClientFactory(name="Acme Construction, Inc.", domain="acme.com")
    riverside = ClientFactory(name="Riverside Builders", domain="riverside.com")
    exact = crosswalk(accounting, "customer", "c0", "Acme (billing)", match_key="acme.com")
    auto = crosswalk(accounting, "customer", "c1", "ACME Construction LLC")  # 100
    review = crosswalk(accounting, "customer", "c2", "Riverside Build Co")  # 90.9
    new = crosswalk(accounting, "customer", "c3", "Granite Peak Partners")  # < 75 against both
    link_entities()

    result = entities_resolve(propagate=False)

    for so in (exact, auto, review, new):
        so.refresh_from_db()
    assert (exact.client, exact.match_method) == (acme, "domain")  # exact keys untouched
    assert (auto.client, auto.match_method) == (acme, "fuzzy")
    assert (review.client, review.match_method) == (None, "")
    assert list(review.candidates.values_list("client", "status")) == [(riverside.pk, Status.PENDING)]
    created = Client.objects.get(source=accounting, external_id="c3")
    assert (new.client, new.match_method, created.name) == (created, "new", "Granite Peak Partners")
    assert (result.auto_linked, result.queued, result.new_entities) == (1, 1, 1)
    assert sorted(actions("entities.fuzzy_linked", "entities.new_client")) == [
        "entities.fuzzy_linked",
        "entities.new_client",
    ]
    # A second pass proposes nothing new and links nothing twice.
    again = entities_resolve(propagate=False)
    assert (again.auto_linked, again.queued, again.new_entities) == (0, 0, 0)
    assert MatchCandidate.objects.count() == 2


def test_thresholds_are_admin_settings(accounting: Connection) -> None:
    riverside = ClientFactory(name="Riverside Builders")
    so = crosswalk(accounting, "customer", "c2", "Riverside Build Co")  # 90.9
    ResolutionSettings.objects.create(auto_link_threshold=90, review_threshold=60)

    entities_resolve(propagate=False)

    so.refresh_from_db()
    assert (so.client, so.match_method) == (riverside, "fuzzy")


def test_two_clients_above_the_auto_threshold_go_to_review(accounting: Connection) -> None:
    ClientFactory(name="Acme Construction Inc")
    ClientFactory(name="Acme Construction LLC")
    so = crosswalk(accounting, "customer", "c1", "ACME Construction")

    entities_resolve(propagate=False)

    so.refresh_from_db()
    assert so.client is None
    assert so.candidates.filter(status=Status.PENDING).count() == 2


def test_not_a_match_is_remembered(accounting: Connection, administrator: Any) -> None:
    ClientFactory(name="Riverside Builders")
    so = crosswalk(accounting, "customer", "c2", "Riverside Build Co")
    entities_resolve(propagate=False)
    candidate = so.candidates.get()

    candidate_reject(candidate=candidate, actor=administrator)
    entities_resolve(propagate=False)
    entities_resolve(propagate=False)

    candidate.refresh_from_db()
    so.refresh_from_db()
    assert (candidate.status, candidate.decided_by) == (Status.REJECTED, administrator)
    assert so.candidates.count() == 1  # never proposed again
    # With its only proposal rejected, the customer becomes a client of its own.
    assert so.match_method == "new" and so.client.name == "Riverside Build Co"
    assert actions("entities.match_rejected") == ["entities.match_rejected"]


def test_link_from_the_queue_links_the_record_and_closes_its_other_proposals(
    accounting: Connection, administrator: Any
) -> None:
    a = ClientFactory(name="Riverside Builders")  # 83.7
    ClientFactory(name="Riverside Builder Supply")  # 98.0
    so = crosswalk(accounting, "customer", "c2", "Riverside Builders Supply Co")
    ResolutionSettings.objects.create(auto_link_threshold=99, review_threshold=60)
    entities_resolve(propagate=False)
    chosen = so.candidates.get(client=a)

    candidate_link(candidate=chosen, actor=administrator)

    so.refresh_from_db()
    assert (so.client, so.match_method) == (a, "review")
    assert dict(so.candidates.values_list("client", "status")) == {
        a.pk: Status.LINKED,
        **{c.client_id: Status.REJECTED for c in so.candidates.exclude(pk=chosen.pk)},
    }
    entry = AuditEntry.objects.get(action="entities.match_linked")
    assert entry.data["client"] == a.pk and entry.actor_user_id == administrator.pk
    with pytest.raises(ValueError, match="already linked"):
        candidate_reject(candidate=chosen, actor=administrator)


def test_merge_moves_crosswalk_rows_and_dependents_onto_the_survivor(
    accounting: Connection, administrator: Any
) -> None:
    so = crosswalk(accounting, "customer", "c9", "Harbour View Dental")
    entities_resolve(propagate=False)  # nothing to match yet: a new client
    so.refresh_from_db()
    duplicate = so.client
    assert so.match_method == "new"
    project = ProjectFactory(client=duplicate)
    other_so = crosswalk(
        accounting, "customer", "c10", "HVD billing", client=duplicate, match_method="review"
    )
    survivor = ClientFactory(name="Harbor View Dental")  # arrives later from the CRM
    entities_resolve(propagate=False)
    candidate = so.candidates.get()
    assert (candidate.client, candidate.status) == (survivor, Status.PENDING)  # never merged automatically

    moved = candidate_merge(candidate=candidate, actor=administrator)

    for obj in (so, other_so, project, duplicate, candidate):
        obj.refresh_from_db()
    assert so.client == survivor and so.match_method == "merged"
    assert other_so.client == survivor and project.client == survivor
    assert duplicate.merged_into == survivor and duplicate.deleted_at is not None
    assert candidate.status == Status.MERGED
    assert moved == {"entities.project.client": 1, "entities.sourceobject.client": 2}
    entry = AuditEntry.objects.get(action="entities.client_merged")
    assert entry.object_id == str(duplicate.pk) and entry.data["into"] == survivor.pk


def test_project_merge_moves_children_and_linking_keeps_them_on_the_survivor(
    accounting: Connection, administrator: Any
) -> None:
    survivor = ProjectFactory(number="P-1")
    duplicate = ProjectFactory(client=survivor.client, number="P-1-dup")
    change_order = ChangeOrderFactory(project=duplicate)
    milestone = MilestoneFactory(project=duplicate)
    line = FinancialLineFactory(project=duplicate, source=accounting, job_ref="j1", amount=Decimal(5))
    job = crosswalk(accounting, "job", "j1", "P-1-dup", project=duplicate, match_method="review")

    entity_merge(duplicate=duplicate, survivor=survivor, actor=administrator)
    link_entities()  # the children's project_ref still names the duplicate

    assert ChangeOrder.objects.get(pk=change_order.pk).project == survivor
    assert survivor.milestones.get() == milestone
    assert FinancialLine.objects.get(pk=line.pk).project == survivor
    job.refresh_from_db()
    assert job.project == survivor
    assert Project.objects.get(pk=duplicate.pk).merged_into == survivor
    assert actions("entities.project_merged") == ["entities.project_merged"]
    with pytest.raises(ValueError):
        entity_merge(duplicate=survivor, survivor=Project.objects.get(pk=duplicate.pk), actor=administrator)


def test_jobs_are_matched_within_their_customers_client(accounting: Connection) -> None:
    client = ClientFactory(name="Acme", domain="acme.com")
    clinic = ProjectFactory(client=client, name="Riverside Clinic", number="P-100")
    ProjectFactory(name="Riverside Clinic", number="P-200")  # another client's: never a candidate
    crosswalk(accounting, "customer", "c1", "Acme", match_key="acme.com")
    job = crosswalk(accounting, "job", "j1", "P-77 Riverside Clinc", match_key="P-77", parent_ref="c1")
    link_entities()

    entities_resolve(propagate=False)

    job.refresh_from_db()
    assert (job.project, job.match_method) == (clinic, "fuzzy")
    assert job.candidates.get().status == Status.LINKED


def test_resolution_tells_the_rules_what_it_linked(
    accounting: Connection, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.rules.evaluation import triggers
    from apps.rules.models import PendingEvaluation

    monkeypatch.setattr(triggers, "flush_soon", lambda **_: None)
    client = ClientFactory(name="Acme Construction")
    project = ProjectFactory(client=None, name="Clinic", number="P-1")
    crosswalk(accounting, "customer", "c1", "ACME Construction LLC")
    crosswalk(accounting, "job", "j1", "P-1 Clinic", match_key="P-1", parent_ref="c1")

    with django_capture_on_commit_callbacks(execute=True):
        entities_resolve()

    project.refresh_from_db()
    assert project.client == client  # the job linked by number, its customer by name
    queued = set(PendingEvaluation.objects.values_list("subject_type", "subject_id"))
    assert {("project", project.pk), ("client", client.pk)} <= queued


def test_review_queue_admin_lists_and_decides_in_bounded_queries(
    accounting: Connection,
    administrator: Any,
    client: Any,
    django_assert_max_num_queries: Any,
) -> None:
    ResolutionSettings.objects.create(auto_link_threshold=100, review_threshold=50)
    for i in range(12):
        ClientFactory(name=f"Northwind {i} Electric")
        crosswalk(accounting, "customer", f"c{i}", f"Northwind {i} Electrical")
    entities_resolve(propagate=False)
    assert MatchCandidate.objects.filter(status=Status.PENDING).count() >= 12
    client.force_login(administrator)
    url = reverse("admin:entities_matchcandidate_changelist")

    with django_assert_max_num_queries(12):
        response = client.get(url)
    assert response.status_code == 200 and b"Northwind 3 Electrical" in response.content

    pending = MatchCandidate.objects.filter(status=Status.PENDING).order_by("pk")
    first, second = pending[0], pending[1]
    client.post(url, {"action": "reject_selected", "_selected_action": [first.pk]})
    client.post(url, {"action": "link_selected", "_selected_action": [second.pk]})
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Status.REJECTED, Status.LINKED)
    assert second.decided_by == administrator


def test_own_entities_are_rescored_after_new_thresholds_or_against_new_clients(
    accounting: Connection, administrator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ClientFactory(name="Riverside Builders")
    settings = ResolutionSettings.objects.create(auto_link_threshold=95, review_threshold=92)
    so = crosswalk(accounting, "customer", "c2", "Riverside Build Co")  # 90.9: a client of its own
    entities_resolve(propagate=False)
    entities_resolve(propagate=False)
    so.refresh_from_db()
    assert so.match_method == "new" and not so.candidates.exists()

    settings.review_threshold = 80
    settings.save()  # a lower threshold: every record is scored again
    entities_resolve(propagate=False)
    candidate = so.candidates.get()
    assert candidate.client == first

    candidate_reject(candidate=candidate, actor=administrator)
    later = ClientFactory(name="Riverside Build Company")  # written after the last pass
    sizes: list[tuple[int, int]] = []

    def spy(lefts: list[str], rights: list[str], **kwargs: Any) -> Any:
        sizes.append((len(lefts), len(rights)))
        return score_pairs(lefts, rights, **kwargs)

    monkeypatch.setattr(resolution, "score_pairs", spy)
    entities_resolve(propagate=False)
    # Nothing unlinked; the customer's own entity is scored against the one new client only.
    assert sizes == [(0, 3), (1, 1)]
    assert dict(so.candidates.values_list("client", "status")) == {
        first.pk: Status.REJECTED,
        later.pk: Status.PENDING,
    }


def test_own_entity_is_proposed_for_a_later_client_with_its_domain(accounting: Connection) -> None:
    so = crosswalk(accounting, "customer", "c1", "Acme Billing Dept", match_key="acme.com")
    entities_resolve(propagate=False)
    so.refresh_from_db()
    assert so.match_method == "new"

    crm_client = ClientFactory(name="Consolidated Widgets", domain="acme.com")  # no name likeness
    entities_resolve(propagate=False)
    link_entities()  # the exact domain pass leaves a record that is its own client alone

    so.refresh_from_db()
    assert so.match_method == "new"
    candidate = so.candidates.get()
    assert (candidate.client, candidate.score, candidate.status) == (crm_client, 100.0, Status.PENDING)


def test_operations_managers_work_the_review_queue(
    accounting: Connection, ops_manager: Any, account_manager: Any, client: Any
) -> None:
    riverside = ClientFactory(name="Riverside Builders")
    so = crosswalk(accounting, "customer", "c2", "Riverside Build Co")
    entities_resolve(propagate=False)
    candidate = so.candidates.get()
    url = reverse("admin:entities_matchcandidate_changelist")

    client.force_login(account_manager)
    assert client.get(url).status_code == 302  # not staff: sent to the login page

    client.force_login(ops_manager)
    assert client.get(url).status_code == 200
    client.post(url, {"action": "link_selected", "_selected_action": [candidate.pk]})
    so.refresh_from_db()
    assert so.client == riverside
    assert client.get(reverse("admin:quality_finding_changelist")).status_code == 200


def test_a_client_made_from_a_customer_follows_its_tombstone(accounting: Connection) -> None:
    so = crosswalk(accounting, "customer", "c7", "Granite Peak Partners")
    entities_resolve(propagate=False)
    so.refresh_from_db()
    made = so.client

    SourceObject.objects.filter(pk=so.pk).update(deleted_at=timezone.now())  # gone upstream
    gone = entities_resolve(propagate=False)
    made.refresh_from_db()
    assert made.deleted_at is not None and gone.changes == {"client": {made.pk}}

    SourceObject.objects.filter(pk=so.pk).update(deleted_at=None)  # back
    entities_resolve(propagate=False)
    made.refresh_from_db()
    assert made.deleted_at is None
    assert entities_resolve(propagate=False).changes == {}
