"""An operations manager defines a fact in admin without code, previews it on real projects, uses it in a
rule (with a fact-vs-fact condition) through the condition editor, publishes, and the rule escalates."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.escalations.models import Escalation
from apps.rules.models import CustomFact, EvaluationRun, Rule
from apps.rules.tests.test_services import fresh_streams
from tests.e2e import conftest as e2e
from tests.factories import (
    ChangeOrderFactory,
    ClientFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    ProjectFactory,
)

from .conftest import fill_count_of_pending, preview_values, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

celery_worker = e2e.celery_worker
smtp_server = e2e.smtp_server


def project(name: str, pending: int, cost: str) -> object:
    p = ProjectFactory(name=name, client=ClientFactory(owner=CrmOwnerFactory()))
    FinancialLineFactory(project=p, kind="invoice", amount=Decimal("100000"))
    FinancialLineFactory(project=p, kind="bill", amount=Decimal(cost))
    for _ in range(pending):
        ChangeOrderFactory(
            project=p, status="pending", created_upstream_at=timezone.now() - dt.timedelta(days=3)
        )
    ChangeOrderFactory(
        project=p, status="approved", created_upstream_at=timezone.now() - dt.timedelta(days=3)
    )
    return p


def test_ops_defines_previews_and_uses_a_custom_fact_that_escalates_a_project(
    page, ops_manager, celery_worker
):
    fresh_streams()
    burst = project("Harbor Tower", pending=4, cost="120000")  # 4 pending, costs over income: escalates
    calm = project("Quiet Lane", pending=1, cost="120000")  # too few pending
    thin = project("Mill Street", pending=5, cost="90000")  # costs under income
    sign_in(page, ops_manager)

    # 1. The fact, in admin: fields, preview (nothing saved), save.
    page.goto(reverse("admin:rules_customfact_add"))
    fill_count_of_pending(page)
    page.click("#preview-button")
    values = preview_values(page)
    assert "count of change orders in the last 30 days where status = pending" in page.inner_text(
        "#custom-fact-preview-block"
    )
    assert values == {
        str(burst): "4 change orders",
        str(calm): "1 change order",
        str(thin): "5 change orders",
    }
    assert not CustomFact.objects.exists()
    screenshot(page, "custom-fact-preview")
    page.locator('input[name="_save"]').click()
    page.wait_for_url(re.compile(r"/admin/rules/customfact/$"))
    assert CustomFact.objects.get().current.number == 1

    # 2. A rule that reads it, built in the condition editor: a value condition and a fact-vs-fact one.
    page.goto(reverse("admin:rules_rule_add"))
    page.fill("#id_key", "pending-burst")
    page.fill("#id_name", "Pending change orders pile up on a loss-making project")
    page.select_option("#id_subject", "project")
    page.select_option("#id_route", "executive")
    page.check('input[name="actions"][value="flag_dashboard"]')
    first = page.locator(".rule-leaf").nth(0)
    first.locator("select.rule-fact").select_option("custom.co_pending_30d")
    first = page.locator(".rule-leaf").nth(0)
    first.locator("select.rule-op").select_option("gte")
    first = page.locator(".rule-leaf").nth(0)
    first.locator(".rule-value input").fill("3")
    page.get_by_role("button", name="+ condition").first.click()
    second = page.locator(".rule-leaf").nth(1)
    second.locator("select.rule-fact").select_option("project.cost_to_date")
    second = page.locator(".rule-leaf").nth(1)
    second.locator("select.rule-op").select_option("gt")
    second = page.locator(".rule-leaf").nth(1)
    second.locator("select.rule-against").select_option("other")
    second = page.locator(".rule-leaf").nth(1)
    second.locator("select.rule-other").select_option("project.income_to_date")
    screenshot(page, "custom-fact-rule-editor")
    page.locator('input[name="_save"]').click()
    page.wait_for_url(re.compile(r"/admin/rules/rule/$"))
    rule = Rule.objects.get(key="pending-burst")
    assert rule.draft["when"] == {
        "all": [
            {"fact": "custom.co_pending_30d", "op": "gte", "value": 3},
            {"fact": "project.cost_to_date", "op": "gt", "other": "project.income_to_date"},
        ]
    }

    # 3. Publish; the worker's run escalates the one project where both hold.
    page.goto(reverse("admin:rules_rule_change", args=[rule.pk]))
    page.get_by_role("link", name="Publish…").first.click()
    confirm = page.locator('input[name="confirm"]')
    if confirm.count():
        confirm.check()
    page.get_by_role("button", name="Publish as a new version").click()
    page.locator(".field-state .readonly").filter(has_text=re.compile(r"^complete$")).wait_for(timeout=60_000)
    assert EvaluationRun.objects.filter(completed_at__isnull=False).exists()
    opened = Escalation.objects.filter(rule__key="pending-burst")
    assert list(opened.values_list("subject_id", flat=True)) == [burst.pk]
    assert calm.pk != burst.pk != thin.pk

    # 4. The escalation's page explains the fact with its definition and version.
    page.goto(reverse("escalation-detail", args=[opened.get().pk]))
    text = page.inner_text("body")
    screenshot(page, "custom-fact-escalation")
    definition = "count of change orders in the last 30 days where status = pending"
    assert f"custom.co_pending_30d (v1): {definition}" in text
    assert "Cost to date $120,000.00 is above Income to date $100,000.00" in text
    assert not page.watched.dialogs and not page.watched.console_errors
