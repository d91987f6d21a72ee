"""Who may open which page: every persona × every page, and an account manager probing by id."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from apps.escalations.models import Delivery
from apps.escalations.tests.test_pages import add_timeline, login, make_client, make_escalation

PERSONAS = [
    "ops_manager",
    "executive",
    "administrator",
    "account_manager",
    "other_account_manager",
    "outsider",
]

# status code per persona for: dashboard, the escalation of account_manager's client, my queue, admin home
# (403: signed in without the role; 404: the object is not theirs to know about; 302: admin sends
# non-staff to its own login page)
MATRIX = {
    "ops_manager": (200, 200, 403, 200),
    "executive": (200, 200, 403, 302),
    "administrator": (200, 200, 200, 200),  # superusers have every role (an empty queue of their own)
    "account_manager": (403, 200, 200, 302),
    "other_account_manager": (403, 404, 200, 302),
    "outsider": (403, 404, 403, 302),
}


@pytest.fixture
def pages(account_manager):
    escalation = make_escalation(
        client=make_client(owner_user=account_manager, name="Harborview Medical Partners")
    )
    return [
        reverse("dashboard"),
        reverse("escalation-detail", args=[escalation.pk]),
        reverse("my-escalations"),
        reverse("admin:index"),
    ]


@pytest.mark.parametrize("persona", PERSONAS)
def test_role_page_matrix(client, request, pages, persona):
    login(client, request.getfixturevalue(persona))
    got = tuple(client.get(url).status_code for url in pages)
    assert got == MATRIX[persona], dict(zip(pages, got, strict=True))


def test_admin_redirects_non_staff_to_the_admin_login(client, executive, pages):
    response = login(client, executive).get(pages[3])
    assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_is_sent_to_log_in_everywhere(client, pages):
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith((reverse("login"), reverse("admin:login"))), url


def test_account_manager_probing_ids_learns_nothing(client, account_manager, other_account_manager):
    """Another manager's escalation and an id that does not exist answer the same 404 page."""
    theirs = make_escalation(client=make_client(owner_user=account_manager))
    login(client, other_account_manager)
    probe = client.get(reverse("escalation-detail", args=[theirs.pk]))
    missing = client.get(reverse("escalation-detail", args=[theirs.pk + 10_000]))
    assert probe.status_code == missing.status_code == 404
    token = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]+"')  # masked afresh per response
    assert token.sub(b"", probe.content) == token.sub(b"", missing.content)
    assert client.post(reverse("escalation-act", args=[theirs.pk]), {"action": "dismiss"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.is_open
    # and their queue does not list it
    assert theirs.summary not in client.get(reverse("my-escalations")).content.decode()


def test_escalation_page_shows_delivery_status_per_channel(client, executive):
    escalation = make_escalation()
    add_timeline(escalation, 3)  # three delivered emails to the account manager
    Delivery.objects.filter(escalation=escalation, target="am2@example.test").update(
        state=Delivery.State.DEAD, last_error="550 mailbox unavailable"
    )
    Delivery.objects.create(
        escalation=escalation,
        action="note_crm",
        target="crm:4242",
        idempotency_key=f"{escalation.pk}-crm",
        state=Delivery.State.PENDING,
        next_attempt_at=escalation.opened_at,
        created_at=escalation.opened_at,
    )
    body = login(client, executive).get(reverse("escalation-detail", args=[escalation.pk])).content.decode()
    channels = body[body.index('id="channels-h"') : body.index('id="timeline-h"')]
    email = channels[channels.index("Email to the account manager") :].split("</tr>")[0]
    cells = [c.split(">", 1)[1].split("<", 1)[0] for c in email.split("<td")[1:]]
    assert cells[:5] == ["3", "2", "0", "0", "1"]  # targets, delivered, waiting, failed, dead
    assert "550 mailbox unavailable" in email
    crm = channels[channels.index("Note in CRM") :].split("</tr>")[0]
    assert [c.split(">", 1)[1].split("<", 1)[0] for c in crm.split("<td")[1:]][:5] == [
        "1",
        "0",
        "1",
        "0",
        "0",
    ]
