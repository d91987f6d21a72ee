"""The pages in a real browser: what executives and account managers see and click, keyboard and all."""

from __future__ import annotations

import contextlib
import re
import time

import pytest
from django.urls import reverse
from playwright.sync_api import Error as PlaywrightError

from apps.dashboard import views as dashboard_views
from apps.escalations.models import Escalation
from apps.escalations.tests.test_pages import EVIDENCE, make_client, make_escalation
from tests.factories import ProjectFactory

from .conftest import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

XSS_NAME = '<img src=x onerror="alert(\'img\')"><script>alert("xss")</script>Harbor & Sons'


def _csp_violations(page) -> list[str]:
    return [m for m in page.watched.console_errors if "Content Security Policy" in m]


@pytest.fixture
def flagged(account_manager):
    """Four flagged projects; the worst is an executive-route change order on Maria's client."""
    harborview = make_client(
        owner_user=account_manager, name="Harborview Medical Partners", renewal_in_days=45
    )
    worst = make_escalation(
        project=ProjectFactory(client=harborview, number="P-7001", name="Tower B"),
        severity="critical",
        summary="Change order of 60,000.00 USD on a project at 9.5 % margin",
    )
    others = [make_escalation(severity=s, route="standard") for s in ("high", "medium", "low")]
    return worst, others


def test_dashboard_renders_flagged_projects_and_svg_charts(page, executive, flagged):
    sign_in(page, executive)
    page.goto(reverse("dashboard"))
    rows = page.locator("table.flagged tbody tr")
    assert rows.count() == 4
    assert "P-7001 Tower B" in rows.first.inner_text()  # critical first
    assert "renews in 45 days" in rows.first.inner_text()
    charts = page.locator("svg.chart")
    assert charts.count() == 3
    for i in range(3):
        box = charts.nth(i).bounding_box()
        assert box and box["width"] > 250 and box["height"] > 80  # drawn, not collapsed
    assert page.locator("#chart-opened title").first.text_content() == (
        "Escalations opened per day by route, last 90 days"
    )
    # the refresh script loaded from our origin and found its setting; nothing was blocked by the CSP
    assert page.evaluate("document.documentElement.dataset.autoRefresh") == "60"
    assert _csp_violations(page) == [] and page.watched.dialogs == []
    screenshot(page, "dashboard")


def test_escalation_page_shows_the_explanation(page, executive, flagged):
    worst, _others = flagged
    sign_in(page, executive)
    page.goto(reverse("escalation-detail", args=[worst.pk]))
    explanation = page.locator("table.explanation")
    text = explanation.inner_text()
    # Labels and sentences; the fact keys wait behind each row's Details toggle.
    assert "Change order amount" in text and "at least" in text and "change_order.amount" not in text
    assert "$50,000.00" in text and "$60,000.00" in text
    assert "Any of the following" in text and "Insufficient data" in text
    context = page.locator("table.context").inner_text()
    assert "synced 2 h ago" in context and "accounting" in context
    assert page.get_by_role("button", name="Approve").is_visible()
    assert _csp_violations(page) == []
    screenshot(page, "escalation")


def test_executive_approves_a_change_order_from_the_dashboard(page, executive, flagged):
    worst, _ = flagged
    sign_in(page, executive)
    page.goto(reverse("dashboard"))
    with page.expect_navigation():
        page.get_by_role("button", name=f"Approve {worst.subject_label}").click()
    # One click never approves: the confirmation step shows the amount first.
    assert "$60,000.00" in page.locator(".decision-amount").inner_text()
    worst.refresh_from_db()
    assert worst.status == Escalation.Status.OPEN
    with page.expect_navigation():
        page.get_by_role("button", name="Yes, approve $60,000.00").click()
    assert f"Escalation #{worst.pk} approved." in page.locator(".messages").inner_text()
    worst.refresh_from_db()
    assert (worst.status, worst.outcome) == (Escalation.Status.RESOLVED, Escalation.Outcome.APPROVED)
    assert worst.events.get(kind="approved").actor == executive.get_username()
    assert page.locator("table.flagged tbody tr").count() == 3
    screenshot(page, "dashboard-after-approve")


def test_keyboard_alone_reaches_and_presses_approve(page, executive, flagged):
    worst, _ = flagged
    sign_in(page, executive)
    page.goto(reverse("dashboard"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"  # first stop
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.value") == "approve":
            break
    else:
        pytest.fail("Tab never reached the Approve button")
    label = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert label == f"Approve {worst.subject_label}"
    # the focus ring is visible (outline from :focus-visible), not suppressed
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    screenshot(page, "keyboard-focus-approve")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    # The confirmation step, by keyboard too: Tab to its button and press Enter.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "confirmed" or (
            page.evaluate("document.activeElement.textContent || ''").startswith("Yes, approve")
        ):
            break
    else:
        pytest.fail("Tab never reached the confirmation button")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert f"Escalation #{worst.pk} approved." in page.locator(".messages").inner_text()
    worst.refresh_from_db()
    assert worst.outcome == Escalation.Outcome.APPROVED


def test_auto_refresh_waits_while_a_form_is_in_use(page, executive, flagged, monkeypatch):
    monkeypatch.setattr(dashboard_views, "REFRESH_SECONDS", 1)
    sign_in(page, executive)
    page.goto(reverse("dashboard"))
    page.evaluate("window.__notReloaded = true")
    page.locator("#f-severity").focus()
    time.sleep(2.5)
    assert page.evaluate("window.__notReloaded === true")  # paused while the filter has focus
    assert "paused" in page.locator("#refresh-status").inner_text()
    page.locator("#f-severity").blur()
    # reloaded once the form is free (polled from Python: wait_for_function evaluates a string, which
    # this page's CSP rightly refuses)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(PlaywrightError):  # the page is navigating: ask again
            if page.evaluate("window.__notReloaded === undefined"):
                break
        time.sleep(0.2)
    else:
        pytest.fail("the page did not reload after the form lost focus")


def test_print_stylesheet_hides_controls(page, executive, flagged):
    sign_in(page, executive)
    page.goto(reverse("dashboard"))
    assert page.locator("form.filters").is_visible()
    page.emulate_media(media="print")
    assert not page.locator("form.filters").is_visible()
    assert not page.locator(".site-nav").is_visible()
    assert page.locator("table.flagged").is_visible() and page.locator("svg.chart").first.is_visible()
    screenshot(page, "dashboard-print")


def test_xss_in_a_synced_client_name_renders_as_text(page, live_server, executive, account_manager):
    client = make_client(owner_user=account_manager, name=XSS_NAME)
    evidence = {
        **EVIDENCE,
        "facts": {**EVIDENCE["facts"], "client.name": {"value": XSS_NAME, "type": "text"}},
    }
    escalation = make_escalation(client=client, summary=f"Flagged: {XSS_NAME}", evidence=evidence)
    sign_in(page, executive)
    pages = [
        (reverse("dashboard"), "table.flagged"),
        (reverse("escalation-detail", args=[escalation.pk]), ".facts-grid"),
    ]
    for url, where in pages:
        page.goto(url)
        assert page.locator(where).get_by_text(XSS_NAME).first.is_visible()  # shown literally, as text
        assert page.locator("img[src='x']").count() == 0
        assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    page.context.clear_cookies()
    # the account manager signs in through the real login form, then opens their queue
    page.goto(reverse("login"))
    page.get_by_label("Username").fill(account_manager.username)
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/my/escalations/"))
    assert page.locator("li.card").get_by_text(XSS_NAME).first.is_visible()
    time.sleep(0.3)  # give a would-be onerror handler its chance
    assert page.watched.dialogs == []
    screenshot(page, "xss-as-text")


def test_account_manager_resolves_from_their_queue_with_an_outcome(page, account_manager):
    mine = make_escalation(
        client=make_client(owner_user=account_manager), summary="Needs a call", route="standard"
    )
    sign_in(page, account_manager)
    page.goto(reverse("my-escalations"))
    card = page.locator("li.card", has_text=mine.subject_label)  # its why is said from the evidence
    card.get_by_label("Outcome").select_option("no_action_needed")
    with page.expect_navigation():
        card.get_by_role("button", name="Resolve").click()
    mine.refresh_from_db()
    assert (mine.status, mine.outcome) == (Escalation.Status.RESOLVED, "no_action_needed")
    screenshot(page, "my-escalations")


@pytest.mark.parametrize(
    "url", ["/admin/", "/admin/rules/rule/add/", "/admin/escalations/escalation/", "/api/docs/"]
)
def test_bundled_uis_run_under_the_csp(page, administrator, url):
    """Django admin, the rule editor and Swagger UI run under the CSP: no inline script anywhere."""
    sign_in(page, administrator)
    response = page.goto(url)
    assert response is not None and response.status == 200
    page.wait_for_load_state("networkidle")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert _csp_violations(page) == [], page.watched.console_errors
    screenshot(page, "csp-" + url.strip("/").replace("/", "-"))
