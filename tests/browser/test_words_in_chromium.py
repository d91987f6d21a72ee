"""The escalation page and its email as the person reading them sees them: sentences, not formulas."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core import mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.escalations.delivery import delivery_attempt
from apps.escalations.models import Delivery
from apps.escalations.tests.test_pages import make_client, make_escalation
from apps.rules.engine.evaluator import compile_condition
from tests.factories import ProjectFactory

from .conftest import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RULE = {
    "all": [
        {"fact": "change_order.amount", "op": "gte", "value": 50000},
        {"fact": "project.margin_pct", "op": "lt", "value": 12},
        {
            "any": [
                {"fact": "client.missed_last_milestone", "op": "is", "value": True},
                {"fact": "client.days_to_renewal", "op": "lte", "value": 60},
            ]
        },
    ]
}
FACTS = {
    "change_order.amount": Decimal("60000.00"),
    "project.margin_pct": Decimal("11.99"),
    "client.missed_last_milestone": False,
    "client.days_to_renewal": 1,
}


@pytest.fixture
def decided(account_manager):
    """An escalation whose evidence is the evaluator's own record of the SPEC's example rule on a project
    at 11.99% margin, one day before the client's renewal."""
    evaluation = compile_condition(RULE, "change_order").evaluate(FACTS)
    stored = evaluation.to_json()
    meta = {"type": "", "unit": "", "age_s": 120, "source": "accounting"}
    evidence = {
        "facts": {
            name: {**meta, "value": str(v) if not isinstance(v, bool) else v} for name, v in FACTS.items()
        },
        "explanation": stored["explanation"],
        "outcome": "matched",
    }
    client = make_client(owner_user=account_manager, name="Acme Builders", renewal_in_days=1)
    escalation = make_escalation(
        project=ProjectFactory(client=client, number="P-7001", name="Tower B"),
        summary=stored["summary"],
        evidence=evidence,
    )
    return escalation


def test_the_escalation_page_reads_as_sentences(page, executive, decided):
    sign_in(page, executive)
    page.goto(reverse("escalation-detail", args=[decided.pk]))
    lead = page.locator(".page-head .lead").inner_text()
    assert lead == (
        "Change order amount $60,000.00 is at least $50,000.00; Margin 11.99% is below 12%; "
        "1 day to renewal (at most 60)"
    )
    why = page.locator("table.explanation")
    assert "12.0%" not in why.inner_text() and "12.0%" not in page.locator("table.context").inner_text()
    key = why.locator("details.fact-key code", has_text="project.margin_pct")
    assert not key.is_visible()  # fact keys wait behind the toggle
    why.locator("details.fact-key summary").nth(1).click()
    assert key.is_visible()
    screenshot(page, "escalation_words")


def test_the_email_lists_what_held_and_what_was_also_checked(page, decided):
    now = timezone.now()
    delivery = Delivery.objects.create(
        escalation=decided,
        action="email_account_manager",
        target="maria@fulcrum-demo.test",
        idempotency_key="shot",
        next_attempt_at=now,
        created_at=now,
    )
    assert delivery_attempt(delivery.pk) == "delivered"
    [message] = mail.outbox
    assert "Margin 11.99% is below 12%" in message.body
    held, _, also = message.body.partition("Also checked:")
    assert "- The client did not miss its last milestone" in also and "project.margin_pct" not in message.body
    assert "1 day to renewal (at most 60)" in held
    assert "income minus costs" in held and "income_to_date" not in message.body  # no formulas
    page.set_content(message.alternatives[0][0])
    assert page.locator("li", has_text="Margin 11.99% is below 12%").count() == 1
    screenshot(page, "escalation_email")


def test_an_executives_digest_and_her_notification_settings(page, executive, account_manager, decided):
    from apps.escalations import services
    from apps.escalations.noise import Notice, notify_many
    from apps.escalations.tasks import deliver_due

    now = timezone.now()
    with transaction.atomic():
        notify_many(
            items=[
                (decided, [Notice("email_executives", executive.email, f"esc{decided.pk}:email_executives")])
            ],
            now=now,
            new=True,
        )
    services.escalation_acknowledge(escalation=decided, actor=account_manager, note="calling the client")
    [digest] = Delivery.objects.filter(action="digest", target=executive.email)
    Delivery.objects.filter(pk=digest.pk).update(next_attempt_at=now)  # the period's end, now
    deliver_due()
    [message] = [m for m in mail.outbox if m.to == [executive.email]]
    assert message.subject == "[Fulcrum] Digest: 1 new escalation, 1 update"
    assert (
        "Why: Change order amount $60,000.00 is at least $50,000.00; Margin 11.99% is below 12%"
        in message.body
    )
    assert "Acknowledged by maria" in message.body
    page.set_content(message.alternatives[0][0])
    screenshot(page, "digest_email")

    sign_in(page, executive)
    page.goto(reverse("notification-settings"))
    assert "one email every hour" in page.locator("main").inner_text()
    page.fill("#id_time_zone", "Europe/Berlin")
    page.fill("#id_quiet_hours", "22-7")
    page.click("main button[type=submit]")
    assert "22:00 to 7:00" in page.locator("main").inner_text()
    screenshot(page, "notification_settings")


SCHEDULE_RULE = {
    "all": [
        {"fact": "project.milestones_missed", "op": "gt", "value": 0},
        {"fact": "project.schedule_status", "op": "ne", "value": "on_track"},
    ]
}


def test_lists_say_why_in_words_for_an_escalation_with_an_old_formula_summary(
    page, executive, account_manager
):
    """An escalation opened before the wording change (its summary is formula text): the executive's
    dashboard rows and the account manager's list say why from its evidence, text choices in words, the
    count's unit once; the raw value waits behind the escalation page's Details toggle."""
    facts = {"project.milestones_missed": 2, "project.schedule_status": "at_risk"}
    stored = compile_condition(SCHEDULE_RULE, "change_order").evaluate(facts).to_json()
    meta = {"project.milestones_missed": ("int", "count"), "project.schedule_status": ("text", "")}
    evidence = {
        "facts": {
            name: {"type": meta[name][0], "unit": meta[name][1], "value": v, "age_s": 60, "source": "pm"}
            for name, v in facts.items()
        },
        "explanation": stored["explanation"],
        "outcome": "matched",
    }
    old = "project.milestones_missed 2 > 0; project.schedule_status at_risk ≠ on_track"
    client = make_client(owner_user=account_manager, name="Acme Builders", renewal_in_days=30)
    escalation = make_escalation(
        project=ProjectFactory(client=client, number="P-7002", name="Harbor Lofts"),
        summary=old,
        evidence=evidence,
    )
    why = "2 missed milestones (more than 0); Schedule status is at risk, not on track"

    sign_in(page, executive)
    page.goto(reverse("dashboard"))
    flagged = page.locator("table", has=page.locator("td.why")).first.inner_text()
    assert why in flagged and old not in page.locator("main").inner_text()
    assert "at_risk" not in page.locator("main").inner_text()
    screenshot(page, "dashboard_why_words")

    page.goto(reverse("escalation-detail", args=[escalation.pk]))
    assert page.locator(".page-head .lead").inner_text() == why
    table = page.locator("table.explanation")
    assert "At risk" in table.inner_text() and "On track" in table.inner_text()
    raw = table.locator("details.fact-key", has_text="project.schedule_status")
    raw.locator("summary").click()
    assert "at_risk" in raw.inner_text()  # the raw value stays in the Details view
    screenshot(page, "escalation_choice_words")

    sign_in(page, account_manager)
    page.goto(reverse("my-escalations"))
    card = page.locator("li.card", has_text="Harbor Lofts")
    assert card.locator("p.summary").inner_text() == why
    screenshot(page, "my_escalations_why_words")
