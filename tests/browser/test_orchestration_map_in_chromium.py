"""The orchestration map in a real browser: from a system to the rule that read it and the action it took."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pytest
from django.utils import timezone

from apps.connectors.models import StreamState, SyncRun
from apps.escalations.models import Delivery, Escalation
from apps.orchestration.tests.load import fill_demo, publish_rule
from tests.factories import ConnectionFactory

from .conftest import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# Where the lead looks at the map with demo-like data (set to save a copy of the screenshot there).
SCREENSHOT_COPY = os.environ.get("FULCRUM_MAP_SCREENSHOT", "")


def _csp_violations(page) -> list[str]:
    return [m for m in page.watched.console_errors if "Content Security Policy" in m]


@pytest.fixture(autouse=True)
def _fresh_map_cache():
    from django.core.cache import cache

    cache.clear()  # the map is cached per window for a few seconds, in this process's cache
    yield
    cache.clear()


@pytest.fixture
def flow():
    """Procore's change orders feed change_order.amount; co-exec-review reads it and emailed executives."""
    now = timezone.now()
    pm = ConnectionFactory(slug="pm", kind="procore", schedule="*/15 * * * *", options={"company_id": 1})
    crm = ConnectionFactory(slug="crm", kind="hubspot", schedule="*/15 * * * *")
    StreamState.objects.create(
        connection=pm, stream="change_orders", last_success_at=now - dt.timedelta(minutes=4)
    )
    StreamState.objects.create(
        connection=crm, stream="companies", last_success_at=now - dt.timedelta(minutes=4)
    )
    started = now - dt.timedelta(hours=1, minutes=30)
    SyncRun.objects.create(
        connection=pm, stream="change_orders", status="succeeded", started_at=started, heartbeat_at=started,
        counts={"seen": 57},
    )  # fmt: skip
    version = publish_rule(
        "co-exec-review",
        "Change order needs executive judgment",
        "change_order",
        ["change_order.amount"],
        ["email_executives", "flag_dashboard"],
    )
    publish_rule(
        "renewal-at-risk", "Client renewal at risk", "client", ["client.days_to_renewal"], ["note_crm"]
    )
    escalation = Escalation.objects.create(
        rule=version.rule, rule_version=version, subject_type="change_order", subject_id=1,
        subject_label="CO 7 on P-7001", route="executive", severity="high", priority=10, summary="s",
        evidence={}, opened_at=now - dt.timedelta(hours=1), last_fired_at=now - dt.timedelta(hours=1),
    )  # fmt: skip
    for action, state in (
        ("email_executives", "delivered"),
        ("email_executives", "delivered"),
        ("flag_dashboard", "dead"),
    ):
        Delivery.objects.create(
            escalation=escalation, action=action, target=f"{action}-{Delivery.objects.count()}",
            idempotency_key=f"{action}-{Delivery.objects.count()}", state=state,
            next_attempt_at=now, created_at=now - dt.timedelta(minutes=59),
        )  # fmt: skip
    return pm, crm


def test_click_from_a_system_to_the_rule_that_read_it_and_the_action_it_took(page, executive, flow):
    pm, _crm = flow
    sign_in(page, executive)
    page.goto("/orchestration/")
    svg = page.locator("svg.orchestration-map")
    box = svg.bounding_box()
    assert box and box["width"] > 1000 and box["height"] > 200  # drawn, not collapsed

    page.locator(f'svg a[data-node="system:{pm.pk}"]').click()
    page.wait_for_url("**focus=system*")
    assert page.locator("#focus-title").inner_text().split() == ["System", "pm", "Procore"]
    rule = page.locator('svg a[data-node="rule:co-exec-review"]')
    assert "related" in (rule.get_attribute("class") or "")
    # The other system's rule takes no part in what pm feeds: dimmed.
    assert "dim" in (page.locator('svg a[data-node="rule:renewal-at-risk"]').get_attribute("class") or "")

    rule.click()
    page.wait_for_url("**focus=rule%3Aco-exec-review*")
    panel = page.locator("#focus")
    assert "Change order needs executive judgment" in panel.locator("h2").inner_text()
    feeds = panel.locator("h3:has-text('Feeds') + ul li")
    assert feeds.filter(has_text="Email to the executives").inner_text().strip().endswith("2")
    assert panel.locator('a[data-node="fact:change_order.amount"]').count() == 1

    # Keyboard: the action's box takes focus and Enter follows it.
    action = page.locator('svg a[data-node="action:email_executives"]')
    action.focus()
    assert page.evaluate("document.activeElement.getAttribute('data-node')") == "action:email_executives"
    page.keyboard.press("Enter")
    page.wait_for_url("**focus=action%3Aemail_executives*")
    figures = page.locator("#focus .map-figures").inner_text()
    assert "Sent\n2" in figures and "Dead\n0" in figures
    assert "OK: delivered" in page.locator("#focus").inner_text()
    dead = page.locator('svg a[data-node="action:flag_dashboard"]')
    assert "✖ Failing" in dead.locator("text.line").text_content()
    assert not _csp_violations(page) and not page.watched.dialogs
    screenshot(page, "orchestration-map-focus")


def test_the_map_with_demo_like_data(page, ops_manager):
    fill_demo()
    sign_in(page, ops_manager)
    page.goto("/orchestration/?window=7d")
    assert page.locator("svg a.node.kind-rule").count() == 9
    assert page.locator("svg a.node.kind-stream").count() == 12
    assert page.locator("table#table-rule tbody tr").count() == 9
    assert not _csp_violations(page)
    path = screenshot(page, "orchestration-map")
    if SCREENSHOT_COPY:
        shutil.copyfile(path, SCREENSHOT_COPY)
