"""Report a miss and read what Fulcrum learned, in a real browser."""

from __future__ import annotations

import datetime as dt
import random
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from apps.escalations.models import Escalation, EscalationEvent
from apps.learning.models import ReportedMiss
from apps.learning.tests.builders import escalation, fresh_streams, publish
from tests.factories import (
    ClientFactory,
    CrmOwnerFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
)

from .conftest import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Where the lead picks up the picture of the page with data (outside the repository).
LEAD_COPY = Path("/work/wt/learned-screenshot.png")


def _csp_violations(page) -> list[str]:
    return [m for m in page.watched.console_errors if "Content Security Policy" in m]


def test_an_account_manager_reports_a_miss_on_their_project(page, account_manager):
    project = ProjectFactory(
        client=ClientFactory(owner=CrmOwnerFactory(user=account_manager)), name="Harbor Tower"
    )
    sign_in(page, account_manager)
    page.goto(f"/learning/misses/report/?subject_type=project&subject_id={project.pk}")
    assert page.locator("h1").inner_text() == "Report a miss"
    assert page.locator("#id_subject_id").input_value() == str(project.pk)
    page.select_option("#id_outcome", "actioned")
    page.fill("#id_missed_at", "2026-11-02")
    page.fill("#id_note", "Margin slid for weeks before anyone noticed")
    page.get_by_role("button", name="Report the miss").click()
    page.wait_for_load_state()
    assert "Miss recorded on Harbor Tower" in page.locator(".messages").inner_text()
    assert "Harbor Tower" in page.locator("table").inner_text()
    miss = ReportedMiss.objects.get()
    assert (miss.subject_id, miss.outcome, miss.reported_by) == (project.pk, "actioned", account_manager)
    assert miss.missed_at.date() == dt.date(2026, 11, 2)
    assert not page.watched.dialogs and not _csp_violations(page)


def test_an_account_manager_cannot_report_on_someone_elses_client(
    page, account_manager, other_account_manager
):
    theirs = ProjectFactory(client=ClientFactory(owner=CrmOwnerFactory(user=other_account_manager)))
    sign_in(page, account_manager)
    page.goto(f"/learning/misses/report/?subject_type=project&subject_id={theirs.pk}")
    page.select_option("#id_outcome", "approved")
    page.get_by_role("button", name="Report the miss").click()
    page.wait_for_load_state()
    assert "only on your own clients" in page.locator("form.miss-form").inner_text()
    assert not ReportedMiss.objects.exists()


@pytest.fixture
def company(executive, ops_manager):
    """Three rules with a year of closed escalations, people who closed them, and twenty projects."""
    rng = random.Random(18)
    opened = timezone.now() - dt.timedelta(days=200)

    def when(fact, op, value):
        return {"all": [{"fact": fact, "op": op, "value": value}]}

    rules = [
        (publish("thin-margin", when("project.margin_pct", "lt", 15), route="executive"), 0.8),
        (publish("late-schedule", when("project.days_behind_schedule", "gt", 20)), 0.55),
        (publish("many-missed", when("project.milestones_missed", "gte", 3)), 0.25),
    ]
    made = []
    for version, acted in rules:
        for i in range(30):
            closed = dt.timedelta(hours=rng.uniform(1, 30 if version.route == "executive" else 80))
            made.append(
                escalation(
                    version, 1000 * version.pk + i, opened=opened + dt.timedelta(days=i * 6),
                    closed_after=closed, outcome="actioned" if rng.random() < acted else "false_alarm",
                )
            )  # fmt: skip
    made = Escalation.objects.bulk_create(made)
    EscalationEvent.objects.bulk_create(
        EscalationEvent(
            escalation=e, kind=e.status, actor="user:elena" if e.route == "executive" else "user:olivia",
            via="web", created_at=e.closed_at,
        )
        for e in made
    )  # fmt: skip
    fresh_streams()
    renewing = timezone.localdate() + dt.timedelta(days=40)
    clients = [ClientFactory(renewal_date=renewing if i % 2 else None) for i in range(4)]
    for i in range(20):
        # Fourteen projects of four repeat clients, six of clients with one project each.
        client = clients[i % 4] if i < 14 else ClientFactory(renewal_date=renewing if i % 3 == 0 else None)
        project = ProjectFactory(client=client, contract_value=Decimal(2_000_000 if i % 3 == 0 else 400_000))
        FinancialLineFactory(project=project, kind="invoice", amount="1000")
        FinancialLineFactory(project=project, kind="bill", amount=str(rng.randint(700, 920)))
        if i % 4 == 0:
            MilestoneFactory(project=project)


def test_executives_read_what_fulcrum_learned(page, executive, company):
    sign_in(page, executive)
    page.goto("/learning/learned/")
    assert page.locator("h1").inner_text() == "What Fulcrum learned"
    rules = page.locator("#rules tbody tr")
    assert rules.count() == 3
    assert "thin-margin" in rules.first.inner_text(), "the rule most often acted on comes first"
    assert page.locator("#rules svg.interval").count() == 6
    assert page.locator("#speed tbody tr").count() == 4  # two routes, two approvers
    assert "Elena Park" in page.locator("#speed").inner_text()
    traits = page.locator("#clients tbody tr")
    assert traits.count() == 3 and "repeat client" in traits.first.inner_text()
    assert "Margin less than 15%" in page.locator("#thresholds").inner_text()
    link = page.locator("#rules a").first
    link.click()
    page.wait_for_load_state()
    assert "/admin/learning/ruleanalytics/" in page.url
    page.go_back()
    path = screenshot(page, "what-fulcrum-learned")
    with pytest.MonkeyPatch.context():
        if LEAD_COPY.parent.is_dir():
            shutil.copy(path, LEAD_COPY)
    assert not page.watched.dialogs and not _csp_violations(page)
