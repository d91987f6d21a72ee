"""Exact-key entity resolution: what links, what stays unlinked, and that a second pass changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from apps.connectors.models import Connection
from apps.entities.linking import link_entities
from apps.entities.models import Client, CrmOwner, Project, SourceObject
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    ConnectionFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
    SubmittalFactory,
    UserFactory,
    VendorFactory,
)


def crosswalk(
    connection: Connection, object_type: str, external_id: str, match_key: str, **extra: Any
) -> SourceObject:
    now = timezone.now()
    return SourceObject.objects.create(
        connection=connection,
        object_type=object_type,
        external_id=external_id,
        name=external_id,
        match_key=match_key,
        source_updated_at=now,
        content_hash="0" * 32,
        synced_at=now,
        **extra,
    )


@dataclass
class World:
    owner: CrmOwner
    client: Client
    by_ref: Project
    by_number: Project
    customer: SourceObject
    job: SourceObject
    job2: SourceObject
    objects: dict[str, Any]


@pytest.fixture
def world(db: None) -> World:
    accounting = ConnectionFactory(slug="accounting", kind="quickbooks")
    owner = CrmOwnerFactory(external_id="o1", email="Maria.Chen@Example.test")
    client = ClientFactory(domain="acme.com", owner_ref="o1")
    by_ref = ProjectFactory(client=None, number="P-1", accounting_ref="j1")
    by_number = ProjectFactory(client=None, number="P-2", accounting_ref="")
    customer = crosswalk(accounting, "customer", "c1", "acme.com")
    job = crosswalk(accounting, "job", "j1", "P-1", parent_ref="c1")
    job2 = crosswalk(accounting, "job", "j2", "P-2", parent_ref="c1")
    vendor = VendorFactory()
    objects = {
        "line": FinancialLineFactory(project=None, job_ref="j1", source=accounting),
        "line2": FinancialLineFactory(project=None, job_ref="j2", source=accounting),
        "overhead": FinancialLineFactory(project=None, job_ref="c1", source=accounting),
        "milestone": MilestoneFactory(project=None, project_ref=by_ref.external_id),
        "change_order": ChangeOrderFactory(project=None, project_ref=by_number.external_id),
        "submittal": SubmittalFactory(
            project=None, project_ref=by_ref.external_id, vendor=None, vendor_ref=vendor.external_id
        ),
        "vendor": vendor,
    }
    return World(owner, client, by_ref, by_number, customer, job, job2, objects)


def refreshed(*objects: Any) -> None:
    for obj in objects:
        obj.refresh_from_db()


def test_every_exact_key_links_and_a_second_pass_changes_nothing(world: World) -> None:
    user = UserFactory(email="maria.chen@example.test")
    changes: dict[str, set[int]] = {}

    counts = link_entities(changes)

    o = world.objects
    refreshed(
        world.owner,
        world.client,
        world.by_ref,
        world.by_number,
        world.customer,
        world.job,
        world.job2,
        *o.values(),
    )
    assert world.client.owner == world.owner and world.owner.user == user
    assert (world.customer.client, world.customer.match_method) == (world.client, "domain")
    assert (world.job.project, world.job.match_method) == (world.by_ref, "origin_id")
    assert (world.job2.project, world.job2.match_method) == (world.by_number, "project_number")
    assert world.by_ref.client == world.client and world.by_number.client == world.client
    assert o["line"].project == world.by_ref and o["line2"].project == world.by_number
    assert o["overhead"].project is None  # charged to a customer, not a job
    assert o["milestone"].project == world.by_ref and o["change_order"].project == world.by_number
    assert o["submittal"].project == world.by_ref and o["submittal"].vendor == o["vendor"]
    assert counts == {
        "client_owner": 1,
        "owner_user": 1,
        "customer_client": 1,
        "job_project": 2,
        "project_client": 2,
        "financial_line_project": 2,
        "milestone_project": 1,
        "change_order_project": 1,
        "submittal_project": 1,
        "submittal_vendor": 1,
    }
    assert changes == {
        "client": {world.client.pk},
        "crm_owner": {world.owner.pk},
        "project": {world.by_ref.pk, world.by_number.pk},
        "financial_line": {o["line"].pk, o["line2"].pk},
        "milestone": {o["milestone"].pk},
        "change_order": {o["change_order"].pk},
        "submittal": {o["submittal"].pk},
    }
    assert set(link_entities().values()) == {0}


def test_ambiguous_keys_link_nothing(world: World) -> None:
    ClientFactory(domain="acme.com")
    UserFactory(username="a", email="maria.chen@example.test")
    UserFactory(username="b", email="MARIA.CHEN@example.test")
    ProjectFactory(client=None, number="P-2")

    link_entities()

    refreshed(world.owner, world.customer, world.job2)
    assert world.owner.user is None
    assert (world.customer.client, world.customer.match_method) == (None, "")
    assert (world.job2.project, world.job2.match_method) == (None, "")


def test_a_link_made_by_a_person_is_left_alone(world: World) -> None:
    other = ClientFactory(domain="other.com")
    SourceObject.objects.filter(pk=world.customer.pk).update(client=other, match_method="manual")

    link_entities()

    refreshed(world.customer)
    assert (world.customer.client, world.customer.match_method) == (other, "manual")


def test_a_changed_reference_moves_or_clears_the_link(world: World) -> None:
    link_entities()
    change_order = world.objects["change_order"]
    type(change_order).objects.filter(pk=change_order.pk).update(project_ref=world.by_ref.external_id)
    Client.objects.filter(pk=world.client.pk).update(owner_ref="nobody")

    counts = link_entities()

    refreshed(change_order, world.client)
    assert change_order.project == world.by_ref and world.client.owner is None
    assert counts["change_order_project"] == 1 and counts["client_owner"] == 1


def test_links_stay_within_their_own_connection(world: World) -> None:
    elsewhere = ConnectionFactory(slug="pm2", kind="procore")
    orphan = MilestoneFactory(project=None, project_ref=world.by_ref.external_id, source=elsewhere)

    link_entities()

    orphan.refresh_from_db()
    assert orphan.project is None


# ---- a sync's scoped pass (``touched``) --------------------------------------------------------------


def test_a_scoped_pass_reaches_what_a_full_pass_would(world: World) -> None:
    link_entities()
    o = world.objects
    # What a sync brings: a project arriving after children that named it, a change order moved to
    # another project, and a job whose project number now points elsewhere (money follows the job).
    late = ProjectFactory(client=None, number="P-9", accounting_ref="")
    early_child = MilestoneFactory(project=None, project_ref=late.external_id)
    ChangeOrder = type(o["change_order"])
    ChangeOrder.objects.filter(pk=o["change_order"].pk).update(project_ref=late.external_id)
    SourceObject.objects.filter(pk=world.job2.pk).update(match_key="P-9")
    changes: dict[str, set[int]] = {}

    counts = link_entities(
        changes,
        touched={
            "project": {late.pk},
            "change_order": {o["change_order"].pk},
            "source_object": {world.job2.pk},
        },
    )

    refreshed(early_child, o["change_order"], o["line2"], world.job2)
    assert early_child.project == late and o["change_order"].project == late
    assert world.job2.project == late and o["line2"].project == late
    assert counts["milestone_project"] == 1 and counts["financial_line_project"] == 1
    assert changes["financial_line"] == {o["line2"].pk}
    assert set(link_entities().values()) == {0}  # nothing left for the full pass


def test_a_scoped_pass_leaves_child_rows_it_was_not_told_about(world: World) -> None:
    link_entities()
    change_order = world.objects["change_order"]
    type(change_order).objects.filter(pk=change_order.pk).update(project_ref=world.by_ref.external_id)

    scoped = link_entities(touched={})
    full = link_entities()

    assert scoped["change_order_project"] == 0 and full["change_order_project"] == 1


def test_a_large_change_set_links_the_whole_table(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import apps.entities.linking as linking

    link_entities()
    change_order, milestone = world.objects["change_order"], world.objects["milestone"]
    type(change_order).objects.filter(pk=change_order.pk).update(project_ref=world.by_ref.external_id)
    monkeypatch.setattr(linking, "SCOPED_MAX", 1)

    counts = link_entities(touched={"change_order": {0, -1}, "milestone": {milestone.pk}})

    refreshed(change_order)
    assert change_order.project == world.by_ref and counts["change_order_project"] == 1


def test_a_sync_pass_skips_crosswalk_statements_its_writes_cannot_move(world: World) -> None:
    # Only a Procore pull's writes (a change order): a client's owner, a customer's client and a job's
    # project read none of them, so their whole-table statements do not run; the owner's login (the users
    # table, which no sync writes) is still looked for. Anything a pull can move is linked as before.
    user = UserFactory(email="maria.chen@example.test")
    change_order = world.objects["change_order"]

    counts = link_entities(touched={"change_order": {change_order.pk}})

    refreshed(world.client, world.customer, world.job, world.owner, change_order)
    assert world.client.owner is None and world.customer.client is None and world.job.project is None
    assert counts["client_owner"] == counts["customer_client"] == counts["job_project"] == 0
    assert counts["project_client"] == 0
    assert world.owner.user == user and change_order.project == world.by_number

    # What each statement reads, written: the crosswalk follows (a job's project moves its project's client).
    crm = link_entities(touched={"client": {world.client.pk}})
    accounting = link_entities(touched={"source_object": {world.job.pk}})

    refreshed(world.client, world.customer, world.job, world.by_ref)
    assert crm["client_owner"] == 1 and world.client.owner == world.owner
    assert crm["customer_client"] == 1 and world.customer.client == world.client
    assert crm["job_project"] == 0 and accounting["job_project"] == 2
    assert world.job.project == world.by_ref and world.by_ref.client == world.client
    assert set(link_entities().values()) == {0}  # nothing left for the full pass
