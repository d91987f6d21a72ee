"""Decision rights as people meet them in a browser (SPEC "Who uses it"): the executive approves after a
confirmation showing the amount; an account manager acknowledges and then resolves from the same email on
the standard route; an account manager cannot resolve an executive-route change order on any channel."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from apps.escalations.delivery import delivery_attempt
from apps.escalations.links import link_token
from apps.escalations.models import Delivery, Escalation
from apps.escalations.tests.test_pages import make_client, make_escalation
from tests.factories import ProjectFactory

from .conftest import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SUMMARY = "Change order of 60,000.00 USD on a project at 9.5 % margin"


def _email_links(escalation: Escalation, recipient: str) -> dict[str, str]:
    """Send the account manager's escalation email through the outbox and read its links."""
    now = timezone.now()
    delivery = Delivery.objects.create(
        escalation=escalation,
        action="email_account_manager",
        target=recipient,
        idempotency_key=f"esc{escalation.pk}:email_account_manager:{recipient}",
        next_attempt_at=now,
        created_at=now,
    )
    assert delivery_attempt(delivery.pk) == "delivered"
    [message] = [m for m in mail.outbox if m.to == [recipient]]
    return {a.lower(): url for a, url in re.findall(r"(\w+): (http\S+/escalations/link/\S+/)", message.body)}


def test_the_executive_approves_after_a_confirmation_showing_the_amount(page, executive, account_manager):
    escalation = make_escalation(
        project=ProjectFactory(
            client=make_client(owner_user=account_manager, name="Harborview Medical Partners"),
            number="P-7001",
            name="Tower B",
        ),
        summary=SUMMARY,
    )
    sign_in(page, executive)
    page.goto(reverse("escalation-detail", args=[escalation.pk]))
    with page.expect_navigation():
        page.get_by_role("button", name="Approve").click()
    # The confirmation: what, for how much, and that it is final; nothing recorded yet.
    assert "$60,000.00" in page.locator(".decision-amount").inner_text()
    assert "cannot be undone" in page.locator("#confirm-h + p").inner_text()
    escalation.refresh_from_db()
    assert escalation.status == Escalation.Status.OPEN and not escalation.events.exists()
    page.get_by_label("Note for the record (optional)").fill("Within the contingency")
    screenshot(page, "decision-confirm-approve")
    with page.expect_navigation():
        page.get_by_role("button", name="Yes, approve $60,000.00").click()
    assert f"Escalation #{escalation.pk} approved." in page.locator(".messages").inner_text()
    escalation.refresh_from_db()
    assert (escalation.status, escalation.outcome) == ("resolved", "approved")
    # The timeline names what happened and who.
    timeline = page.locator("ol.timeline").inner_text()
    assert "Approved\nby Elena Park (elena) via web" in timeline or re.search(
        r"Approved\s+by Elena Park \(elena\)\s+via web", timeline
    )
    assert "Within the contingency" in timeline and "Resolved" not in timeline
    assert not [m for m in page.watched.console_errors if "Content Security Policy" in m]
    assert page.watched.dialogs == []
    screenshot(page, "decision-approved-timeline")


def test_an_account_manager_acknowledges_then_resolves_from_the_same_email(
    page, live_server, settings, account_manager
):
    settings.SITE_URL = live_server.url
    escalation = make_escalation(
        client=make_client(owner_user=account_manager), route="standard", summary="Needs a call"
    )
    links = _email_links(escalation, account_manager.email)
    assert set(links) == {"acknowledge", "resolve", "dismiss"}
    # No sign-in: the signed link names the person.
    page.goto(links["acknowledge"])
    screenshot(page, "email-link-acknowledge-confirm")
    with page.expect_navigation():
        page.get_by_role("button", name="Confirm: Acknowledge").click()
    assert "acknowledged" in page.locator("h1").inner_text()
    # The same email's resolve link still works.
    page.goto(links["resolve"])
    assert page.locator("h1").inner_text().endswith(escalation.subject_label)
    page.get_by_label("Outcome").select_option("no_action_needed")
    page.get_by_label("Note for the record (optional)").fill("Handled by phone")
    with page.expect_navigation():
        page.get_by_role("button", name="Confirm: Resolve").click()
    assert "resolved" in page.locator("h1").inner_text()
    screenshot(page, "email-link-resolved")
    escalation.refresh_from_db()
    assert (escalation.status, escalation.outcome) == ("resolved", "no_action_needed")
    assert list(escalation.events.values_list("kind", "via")) == [
        ("acknowledged", "email"),
        ("resolved", "email"),
    ]
    # Spent links say what happened, by whom and when.
    page.goto(links["acknowledge"])
    text = page.locator("main").inner_text()
    assert f"Escalation #{escalation.pk} is already resolved" in text
    assert "Resolved: no action needed by Maria Lopez" in text
    assert "Handled by phone" in text
    screenshot(page, "email-link-spent")


def test_an_account_manager_cannot_resolve_an_executive_route_change_order_anywhere(
    page, live_server, settings, account_manager
):
    settings.SITE_URL = live_server.url
    escalation = make_escalation(client=make_client(owner_user=account_manager), summary=SUMMARY)
    # Email: the email offers only Acknowledge; a resolve link (an old email's, or forged) is refused.
    links = _email_links(escalation, account_manager.email)
    assert set(links) == {"acknowledge"}
    token = link_token(escalation=escalation, action="resolve", recipient=account_manager.email)
    response = page.goto(f"{live_server.url}/escalations/link/{token}/")
    assert response is not None and response.status == 403
    assert "only Executives and Administrators may resolve it" in page.locator("main").inner_text()
    screenshot(page, "email-link-refused")
    # Pages: their queue and the escalation page offer Acknowledge and a note, no Resolve or Dismiss.
    sign_in(page, account_manager)
    page.goto(reverse("my-escalations"))
    card = page.locator("li.card", has_text=escalation.subject_label)  # its why is said from the evidence
    assert card.get_by_role("button", name="Acknowledge").is_visible()
    assert card.get_by_role("button", name="Resolve").count() == 0
    page.goto(reverse("escalation-detail", args=[escalation.pk]))
    assert page.get_by_role("button", name="Resolve").count() == 0
    assert page.get_by_role("button", name="Dismiss").count() == 0
    assert page.get_by_role("button", name="Approve").count() == 0
    assert "waits for an executive decision" in page.locator(".waits-for-executive").inner_text()
    page.get_by_label("Add a note").fill("Client asked to wait for Elena")
    with page.expect_navigation():
        page.get_by_role("button", name="Add note").click()
    assert "Note added" in page.locator("ol.timeline").inner_text()
    screenshot(page, "account-manager-executive-change-order")
    # A hand-made form post from the signed-in page is refused with a message, nothing changed.
    csrf = page.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    act = reverse("escalation-act", args=[escalation.pk])
    with page.expect_navigation():
        page.evaluate(
            """([act, csrf]) => {
                const form = document.createElement("form");
                form.method = "post"; form.action = act;
                for (const [k, v] of [["csrfmiddlewaretoken", csrf], ["action", "resolve"],
                                      ["outcome", "no_action_needed"]]) {
                    const input = document.createElement("input");
                    input.type = "hidden"; input.name = k; input.value = v; form.appendChild(input);
                }
                document.body.appendChild(form); form.submit();
            }""",
            [act, csrf],
        )
    assert "was not changed" in page.locator(".messages").inner_text()
    assert "only Executives and Administrators may resolve it" in page.locator(".messages").inner_text()
    # API, with the same session: 403 and the JSON error.
    api = page.request.post(
        f"{live_server.url}/api/escalations/{escalation.pk}/resolve/",
        data={"outcome": "no_action_needed"},
        headers={"X-CSRFToken": _csrf_cookie(page), "Referer": live_server.url + "/"},
    )
    assert api.status == 403
    assert api.json()["error"]["code"] == "permission_denied"
    escalation.refresh_from_db()
    assert (escalation.status, escalation.outcome) == ("open", "")
    assert list(escalation.events.values_list("kind", flat=True)) == ["noted"]


def _csrf_cookie(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
