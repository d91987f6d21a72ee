"""Signed email links: GET confirms, only POST acts; expired, tampered, reused or foreign ones do nothing."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from django.core import mail, signing
from django.test import Client
from django.utils import timezone

from apps.accounts.models import NotificationSettings
from apps.escalations import services
from apps.escalations.delivery import NOTIFY_ACTION, WRITEBACK_ACTION, delivery_attempt
from apps.escalations.links import SALT, link_token, link_urls, people_of, recipient_user
from apps.escalations.models import Delivery, Escalation, EscalationEvent

from .helpers import make_escalation

pytestmark = pytest.mark.django_db


def _url(token: str) -> str:
    return f"/escalations/link/{token}/"


def _link(escalation, action, recipient) -> str:
    return _url(link_token(escalation=escalation, action=action, recipient=recipient.email))


@pytest.fixture
def escalation(account_manager):
    """An executive-route change order: its account manager may only acknowledge it."""
    return make_escalation(owner_user=account_manager)


@pytest.fixture
def standard(account_manager):
    """A standard-route change order: its account manager acknowledges, resolves and dismisses it."""
    return make_escalation(owner_user=account_manager, route="standard")


def _state(escalation) -> tuple[str, str]:
    escalation.refresh_from_db()
    return escalation.status, escalation.outcome


def test_get_shows_a_confirmation_page_and_changes_nothing(client, escalation, account_manager):
    response = client.get(_link(escalation, "acknowledge", account_manager))
    page = response.content.decode()
    assert response.status_code == 200
    # Why it is here, in words from its evidence (its stored summary is the old formula text).
    assert (
        escalation.subject_label in page and "Change order amount $60,000.00 is at least $50,000.00" in page
    )
    assert escalation.summary not in page
    assert 'method="post"' in page and "csrfmiddlewaretoken" in page
    assert "Acknowledge" in page
    assert response["Cache-Control"].startswith("max-age=0")
    assert client.head(_link(escalation, "acknowledge", account_manager)).status_code == 200  # scanners
    assert _state(escalation) == ("open", "")
    assert not EscalationEvent.objects.filter(escalation=escalation).exists()


def test_post_acts_as_the_recipient_from_the_email_link(client, escalation, account_manager):
    response = client.post(_link(escalation, "acknowledge", account_manager))
    assert response.status_code == 200 and "acknowledged" in response.content.decode()
    assert _state(escalation) == ("acknowledged", "")
    event = EscalationEvent.objects.get(escalation=escalation, kind="acknowledged")
    assert (event.actor, event.via) == ("maria", EscalationEvent.Via.EMAIL)


def test_resolve_link_offers_the_outcomes_and_records_the_chosen_one(client, standard, account_manager):
    url = _link(standard, "resolve", account_manager)
    page = client.get(url).content.decode()
    assert 'name="outcome"' in page and 'value="no_action_needed"' in page
    assert client.post(url, {"outcome": "no_action_needed", "note": "handled by phone"}).status_code == 200
    assert _state(standard) == ("resolved", "no_action_needed")
    assert EscalationEvent.objects.get(escalation=standard, kind="resolved").note == "handled by phone"


def test_resolve_with_an_outcome_a_person_cannot_set_changes_nothing(client, standard, account_manager):
    for outcome in ("auto_resolved", "approved"):
        response = client.post(_link(standard, "resolve", account_manager), {"outcome": outcome})
        assert response.status_code == 400
    assert _state(standard) == ("open", "")


def test_the_action_comes_from_the_token_not_the_form(client, escalation, account_manager):
    response = client.post(
        _link(escalation, "acknowledge", account_manager), {"action": "dismiss", "outcome": "false_alarm"}
    )
    assert response.status_code == 200
    assert _state(escalation) == ("acknowledged", "")


def test_an_expired_link_is_410_and_changes_nothing(client, escalation, account_manager, settings):
    url = _link(escalation, "acknowledge", account_manager)
    later = timezone.now() + settings.FULCRUM["EMAIL_LINK_MAX_AGE"] + dt.timedelta(minutes=1)
    with time_machine.travel(later, tick=False):
        assert client.get(url).status_code == 410
        response = client.post(url)
    assert response.status_code == 410 and "expired" in response.content.decode()
    assert _state(escalation) == ("open", "")


def test_a_link_just_inside_its_lifetime_still_works(client, escalation, account_manager, settings):
    url = _link(escalation, "acknowledge", account_manager)
    later = timezone.now() + settings.FULCRUM["EMAIL_LINK_MAX_AGE"] - dt.timedelta(minutes=1)
    with time_machine.travel(later, tick=False):
        assert client.post(url).status_code == 200
    assert _state(escalation) == ("acknowledged", "")


def test_a_tampered_link_is_400_and_changes_nothing(client, escalation, account_manager):
    token = link_token(escalation=escalation, action="acknowledge", recipient=account_manager.email)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    assert client.post(_url(flipped)).status_code == 400
    # A payload re-encoded with another action but the old signature.
    _payload, _, rest = token.partition(":")
    forged = signing.dumps(
        {**signing.loads(token, salt=SALT), "a": "dismiss"}, salt=SALT, compress=True
    ).partition(":")[0]
    assert client.post(_url(f"{forged}:{rest}")).status_code == 400
    # Signed with another salt (e.g. a token from another feature).
    other = signing.dumps({"e": escalation.pk, "a": "dismiss", "r": "maria@fulcrum-demo.test", "s": "x"})
    response = client.post(_url(other))
    assert response.status_code == 400 and "not valid" in response.content.decode()
    assert _state(escalation) == ("open", "")


def test_a_used_link_is_409_the_second_time_and_says_what_happened(client, standard, account_manager):
    url = _link(standard, "resolve", account_manager)
    assert client.post(url, {"outcome": "actioned", "note": "called them"}).status_code == 200
    response = client.post(url, {"outcome": "duplicate"})
    page = response.content.decode()
    assert response.status_code == 409 and f"Escalation #{standard.pk} is already resolved" in page
    # What happened, by whom, when and from where.
    assert "Resolved: actioned by Maria Lopez on" in page and "from an email link" in page
    assert "called them" in page and "<time datetime=" in page
    assert _state(standard) == ("resolved", "actioned")
    assert client.get(url).status_code == 409


def test_acknowledging_from_an_email_spends_only_its_acknowledge_link(client, standard, account_manager):
    acknowledge, resolve, dismiss = (
        _link(standard, action, account_manager) for action in ("acknowledge", "resolve", "dismiss")
    )
    assert client.post(acknowledge).status_code == 200
    spent = client.get(acknowledge)
    assert spent.status_code == 409 and "Acknowledged by Maria Lopez" in spent.content.decode()
    # The same email's other links still work.
    assert client.get(resolve).status_code == 200 and client.get(dismiss).status_code == 200
    assert client.post(resolve, {"outcome": "actioned"}).status_code == 200
    assert _state(standard) == ("resolved", "actioned")


def test_closing_spends_every_link_whoever_closed_it(client, standard, account_manager, executive):
    links = [_link(standard, action, account_manager) for action in ("acknowledge", "resolve", "dismiss")]
    services.escalation_dismiss(escalation=standard, actor=executive, outcome="duplicate", via="api")
    for url in links:
        response = client.post(url, {"outcome": "actioned"})
        page = response.content.decode()
        assert response.status_code == 409 and f"Escalation #{standard.pk} is already dismissed" in page
        assert "Dismissed: duplicate by Elena Park" in page and "through the API" in page
    assert _state(standard) == ("dismissed", "duplicate")


def test_someone_elses_acknowledgement_spends_the_acknowledge_link_only(
    client, escalation, account_manager, executive
):
    acknowledge = _link(escalation, "acknowledge", account_manager)
    approve = _link(escalation, "approve", executive)
    services.escalation_acknowledge(escalation=escalation, actor=executive)
    response = client.post(acknowledge)
    assert response.status_code == 409 and "Acknowledged by Elena Park" in response.content.decode()
    assert client.get(approve).status_code == 200
    assert _state(escalation) == ("acknowledged", "")


def test_a_refire_or_a_policy_event_does_not_kill_links(client, escalation, account_manager):
    url = _link(escalation, "acknowledge", account_manager)
    Escalation.objects.filter(pk=escalation.pk).update(
        fire_count=5, last_fired_at=timezone.now() + dt.timedelta(hours=1)
    )
    EscalationEvent.objects.create(
        escalation=escalation, kind="reminder", actor="system:policy", via="system", created_at=timezone.now()
    )
    assert client.post(url).status_code == 200
    assert _state(escalation) == ("acknowledged", "")


def test_csrf_is_enforced_on_the_post(escalation, account_manager):
    browser = Client(enforce_csrf_checks=True)
    url = _link(escalation, "acknowledge", account_manager)
    assert browser.post(url).status_code == 403
    assert _state(escalation) == ("open", "")
    page = browser.get(url).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert browser.post(url, {"csrfmiddlewaretoken": token}).status_code == 200
    assert _state(escalation) == ("acknowledged", "")


def test_an_account_manager_cannot_use_an_approve_link(client, escalation, account_manager):
    response = client.post(_link(escalation, "approve", account_manager))
    assert response.status_code == 403
    assert _state(escalation) == ("open", "")


def test_a_link_for_another_managers_client_does_nothing(client, escalation, other_account_manager):
    response = client.post(_link(escalation, "acknowledge", other_account_manager))
    assert response.status_code == 403
    assert _state(escalation) == ("open", "")


def test_a_crm_owner_address_reaches_its_linked_user(client, account_manager):
    from tests.factories import CrmOwnerFactory

    escalation = make_escalation(owner_user=account_manager)
    CrmOwnerFactory(email="m.chen@crm.example.test", user=account_manager)
    token = link_token(escalation=escalation, action="acknowledge", recipient="M.Chen@crm.example.test")
    assert client.post(_url(token)).status_code == 200
    assert EscalationEvent.objects.get(escalation=escalation, kind="acknowledged").actor == "maria"


def test_an_address_shared_by_two_accounts_does_nothing(client, escalation, account_manager):
    from tests.factories import UserFactory

    UserFactory(username="maria2", email=account_manager.email.upper())
    assert client.post(_link(escalation, "acknowledge", account_manager)).status_code == 403
    assert _state(escalation) == ("open", "")


def test_people_looked_up_together_are_who_each_is_alone(account_manager, executive, administrator):
    from django.contrib.auth.models import AnonymousUser

    from apps.accounts.roles import can_decide_approvals
    from tests.factories import CrmOwnerFactory, UserFactory

    CrmOwnerFactory(name="M Chen", email="m.chen@crm.example.test", user=account_manager)
    CrmOwnerFactory(name="A Park", email="shared-owner@crm.example.test", user=executive)
    CrmOwnerFactory(name="B Park", email="shared-owner@crm.example.test", user=account_manager)
    UserFactory(username="twin1", email="twin@fulcrum-demo.test")
    UserFactory(username="twin2", email="TWIN@fulcrum-demo.test")
    UserFactory(username="gone", email="gone@fulcrum-demo.test", is_active=False)
    CrmOwnerFactory(email="gone-owner@crm.example.test", user=UserFactory(username="gone2", is_active=False))
    addresses = [
        account_manager.email.upper(),  # found ignoring case
        executive.email,
        administrator.email,  # a superuser decides
        "M.Chen@crm.example.test",  # a CRM owner's user
        "shared-owner@crm.example.test",  # two owners: the first by name
        "twin@fulcrum-demo.test",  # two accounts: nobody
        "gone@fulcrum-demo.test",  # an inactive user: nobody
        "gone-owner@crm.example.test",  # an inactive owner's user: nobody
        "nobody@elsewhere.test",
    ]
    together = people_of(addresses)

    alone = {}
    for address in addresses:
        user = recipient_user(address)
        alone[address.lower()] = (user, can_decide_approvals(user or AnonymousUser()))
    assert together == alone
    assert [together[a.lower()][0] for a in addresses[:5]] == [
        account_manager, executive, administrator, account_manager, executive
    ]  # fmt: skip
    assert [together[a.lower()][1] for a in addresses[:5]] == [False, True, True, False, True]
    # recipient_user is the same lookup for one address: hold the refusals to what they must be, too.
    assert [together[a.lower()] for a in addresses[5:]] == [(None, False)] * 4
    assert people_of([]) == {}


def test_a_recipient_without_an_account_does_nothing(client, escalation):
    token = link_token(escalation=escalation, action="acknowledge", recipient="nobody@elsewhere.test")
    assert client.post(_url(token)).status_code == 403
    assert _state(escalation) == ("open", "")


def test_an_executive_approves_from_the_link_and_the_decision_is_queued_for_procore(
    client, escalation, executive
):
    assert client.post(_link(escalation, "approve", executive), {"note": "go"}).status_code == 200
    assert _state(escalation) == ("resolved", "approved")
    writeback = Delivery.objects.get(escalation=escalation, action=WRITEBACK_ACTION)
    co = escalation.project.change_orders.get(pk=escalation.subject_id)
    assert writeback.target == f"{co.source_id}:{co.project_ref}:{co.external_id}"
    assert writeback.idempotency_key == f"esc{escalation.pk}:{WRITEBACK_ACTION}:{writeback.target}"


def test_emails_carry_links_for_what_each_recipient_may_do(escalation, account_manager, executive, settings):
    settings.SITE_URL = "https://fulcrum.example"
    now = timezone.now()
    for action, person in (("email_account_manager", account_manager), ("email_executives", executive)):
        delivery = Delivery.objects.create(
            escalation=escalation,
            action=action,
            target=person.email,
            idempotency_key=f"esc{escalation.pk}:{action}:{person.email}",
            next_attempt_at=now,
            created_at=now,
        )
        assert delivery_attempt(delivery.pk) == "delivered"
    to_maria, to_elena = mail.outbox
    maria_links = re.findall(r"(\w+): (https://fulcrum\.example/escalations/link/\S+/)", to_maria.body)
    # An executive-route change order: its account manager may only acknowledge it (and add notes).
    assert [a for a, _ in maria_links] == ["Acknowledge"]
    elena_links = dict(re.findall(r"(\w+): (https://fulcrum\.example/escalations/link/\S+/)", to_elena.body))
    assert {"Approve", "Reject", "Acknowledge", "Resolve", "Dismiss"} == set(elena_links)
    html = to_maria.alternatives[0][0]
    assert all(url.replace("&", "&amp;") in html or url in html for _, url in maria_links)
    # The decision in plain words: the condition that held as a sentence, and what the fact means.
    assert "- Change order amount $60,000.00 is at least $50,000.00" in to_maria.body
    assert "the change order's total" in to_maria.body and "change_order.amount" not in to_maria.body
    # A link from the email works: the path after SITE_URL is the confirmation page.
    client = Client()
    path = maria_links[0][1].removeprefix("https://fulcrum.example")
    assert client.get(path).status_code == 200
    assert client.post(path).status_code == 200
    assert _state(escalation) == ("acknowledged", "")


def test_an_email_without_links_promises_none(escalation):
    # The demo's other account managers (CRM owners without a Fulcrum account) get no links: their
    # email must not speak of "the action links".
    delivery = Delivery.objects.create(
        escalation=escalation,
        action="email_account_manager",
        target="nobody@elsewhere.test",
        idempotency_key=f"esc{escalation.pk}:email_account_manager:nobody",
        next_attempt_at=timezone.now(),
        created_at=timezone.now(),
    )
    assert delivery_attempt(delivery.pk) == "delivered"
    (message,) = mail.outbox
    html = message.alternatives[0][0]
    assert "/escalations/link/" not in message.body and "/escalations/link/" not in html
    assert "action links" not in message.body and "action links" not in html
    assert "routes escalations about your clients to you" in message.body


def test_the_links_are_one_per_recipient(escalation, account_manager, executive):
    maria = dict(link_urls(escalation=escalation, recipient=account_manager.email))
    elena = dict(link_urls(escalation=escalation, recipient=executive.email))
    assert maria["acknowledge"] != elena["acknowledge"]
    assert link_urls(escalation=escalation, recipient="nobody@elsewhere.test") == []


def test_stakeholders_hear_once_when_someone_acts(standard, account_manager, executive):
    escalation = standard
    # Executives get notices in their digest by default (test_noise_people.py); this one asked for each.
    NotificationSettings.objects.create(user=executive, digest_minutes=0)
    now = timezone.now()
    for person in (account_manager, executive):
        Delivery.objects.create(
            escalation=escalation,
            action="email_executives",
            target=person.email,
            idempotency_key=f"k:{person.email}",
            state=Delivery.State.DELIVERED,
            next_attempt_at=now,
            created_at=now,
        )
    services.escalation_acknowledge(escalation=escalation, actor=executive, note="looking")
    notices = Delivery.objects.filter(escalation=escalation, action=NOTIFY_ACTION)
    assert list(notices.values_list("target", flat=True)) == [
        account_manager.email
    ]  # not the executive who acted
    services.escalation_resolve(escalation=escalation, actor=account_manager, outcome="actioned")
    assert sorted(notices.values_list("target", flat=True)) == sorted(
        [account_manager.email, executive.email]
    )
    # Running the helper again for the same event queues nothing new.
    services.stakeholders_notify(escalation=escalation, actor=account_manager)
    assert notices.count() == 2
    for notice in notices.all():
        assert delivery_attempt(notice.pk) == "delivered", Delivery.objects.get(pk=notice.pk).last_error
    ack_notice = next(m for m in mail.outbox if m.to == [account_manager.email])
    assert "acknowledged by elena" in ack_notice.subject and "looking" in ack_notice.body
    resolve_notice = next(m for m in mail.outbox if m.to == [executive.email])
    assert "resolved by maria" in resolve_notice.body and "Actioned" in resolve_notice.body
