"""Who an escalation is about: one query per batch of subjects, and everything its actions read loaded."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.entities.models import ChangeOrder
from apps.escalations.services import subjects_parties
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    CrmOwnerFactory,
    ProjectFactory,
    SubmittalFactory,
)

pytestmark = pytest.mark.django_db


def _read_everything(project, client) -> tuple:
    """What labels and action targets read: none of it may cost a query of its own."""
    return (
        str(project) if project else None,
        (project.source_id, project.external_id, project.client_id) if project else None,
        (client.pk, client.source_id, client.external_id, str(client)),
        (client.owner.email, str(client.owner)) if client.owner else None,
    )


@pytest.mark.parametrize("subject_type", ["change_order", "submittal", "project", "client"])
def test_every_subject_type_loads_its_parties_in_one_query(subject_type):
    client = ClientFactory(name="Harborview", owner=CrmOwnerFactory(email="am@example.test", name="Ann"))
    project = ProjectFactory(client=client, name="Tower", number="P-7")
    subject = {
        "change_order": lambda: ChangeOrderFactory(project=project, number="CO-3", title="Extra steel"),
        "submittal": lambda: SubmittalFactory(project=project, number="S-9", revision=2),
        "project": lambda: project,
        "client": lambda: client,
    }[subject_type]()
    with CaptureQueriesContext(connection) as queries:
        [(label, found_project, found_client)] = subjects_parties(subject_type, [subject.pk]).values()
        seen = _read_everything(found_project, found_client)
    assert len(queries) == 1
    assert (
        label
        == {
            "change_order": "CO CO-3 Extra steel on P-7 Tower",
            "submittal": "Submittal S-9 rev 2",
            "project": "P-7 Tower",
            "client": "Harborview",
        }[subject_type]
    )
    assert seen[2] == (client.pk, client.source_id, client.external_id, "Harborview")
    assert seen[3] == ("am@example.test", "Ann")
    if subject_type != "client":
        assert seen[1] == (project.source_id, project.external_id, client.pk)


def test_a_missing_subject_is_an_error():
    with pytest.raises(ChangeOrder.DoesNotExist, match="no longer exist"):
        subjects_parties("change_order", [987654])
