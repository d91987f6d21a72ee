"""Two forms people fill in, in a real browser: the custom-fact preview in admin (valid, refused, nothing to
preview on) and the report-a-miss page (wrong input said beside its field, then a miss recorded)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.learning.models import ReportedMiss
from apps.learning.tests.builders import publish
from apps.rules.models import CustomFact
from tests.factories import ChangeOrderFactory, ClientFactory, CrmOwnerFactory, ProjectFactory

from .conftest import fill_count_of_pending, preview_values, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _csp_violations(page) -> list[str]:
    return [m for m in page.watched.console_errors if "Content Security Policy" in m]


def test_ops_previews_a_custom_fact_under_its_label_and_reads_refusals_beside_their_fields(page, ops_manager):
    projects = []
    for pending in range(3):
        project = ProjectFactory(name=f"Harbor <b>Tower</b> {pending}")
        for _ in range(pending):
            ChangeOrderFactory(project=project, status="pending", created_upstream_at=timezone.now())
        projects.append(project)
    sign_in(page, ops_manager)
    page.goto(reverse("admin:rules_customfact_add"))
    fill_count_of_pending(page)
    page.fill("#id_label", "Pending <i>change</i> orders")
    page.click("#preview-button")
    shown = preview_values(page)
    table = page.locator("#custom-fact-preview")
    # text_content: admin's style capitalises headers on screen.
    assert table.locator("th").nth(1).text_content() == "Pending <i>change</i> orders (custom.co_pending_30d)"
    assert table.locator("i").count() == 0 and table.locator("b").count() == 0, "names and labels escaped"
    assert shown == {
        str(projects[0]): "0 change orders",
        str(projects[1]): "1 change order",
        str(projects[2]): "2 change orders",
    }
    screenshot(page, "custom-fact-preview-labelled")

    # Refused: each reason beside the field it is about, and nothing saved.
    page.select_option("#id_type", "money")
    page.fill("#id_unit", "USD")
    page.fill("#id_filters", "status eq pending\nbogus gt <script>x</script>")
    page.click("#preview-button")
    page.locator(".errornote").wait_for()
    assert page.locator("#custom-fact-preview").count() == 0
    type_row = page.locator(".field-type").inner_text()
    assert "this aggregate is int (count), not money (USD)" in type_row
    assert "'bogus' is not a field of change orders" in page.locator(".field-filters").inner_text()
    assert page.locator("#id_label").input_value() == "Pending <i>change</i> orders", "what was typed is kept"
    screenshot(page, "custom-fact-preview-refused")

    # Nothing of the subject type yet: said in words.
    page.goto(reverse("admin:rules_customfact_add"))
    fill_count_of_pending(page, subject="submittal")
    page.click("#preview-button")
    page.locator("#custom-fact-preview-block").wait_for()
    assert "There are no submittals yet to preview on." in page.inner_text("#custom-fact-preview-block")

    assert not CustomFact.objects.exists()
    assert not page.watched.dialogs and not _csp_violations(page)


def test_report_a_miss_says_what_is_wrong_beside_each_field_then_records_the_miss(page, account_manager):
    mine = ProjectFactory(
        name="Harbor <Tower>", client=ClientFactory(owner=CrmOwnerFactory(user=account_manager))
    )
    publish("thin", {"all": [{"fact": "project.margin_pct", "op": "lt", "value": 12}]})
    sign_in(page, account_manager)
    page.goto("/learning/misses/report/")
    assert page.locator("#id_outcome").input_value() == "", "the outcome is chosen, not preset"

    # Wrong: no such project, no outcome, a day still to come. Nothing is recorded; each field says why.
    page.fill("#id_subject_id", "999999")
    page.fill("#id_missed_at", (timezone.localdate() + dt.timedelta(days=3)).isoformat())
    page.get_by_role("button", name="Report the miss").click()
    page.locator(".errors").wait_for()
    assert "The miss was not recorded" in page.inner_text(".errors")
    errors = page.locator(".field-error").all_inner_texts()
    assert errors == [
        "No project you may report on is numbered or named “999999”.",
        "This field is required.",
        "This day is still to come: a miss is about something that happened.",
    ]
    assert not ReportedMiss.objects.exists()
    screenshot(page, "report-miss-refused")

    # Valid, from a link that names the project: the page says which one, and records it.
    page.goto(f"/learning/misses/report/?subject_type=project&subject_id={mine.pk}")
    assert page.inner_text(".miss-subject") == "Reporting on Harbor <Tower>."
    page.select_option("#id_outcome", "actioned")
    page.fill("#id_missed_at", (timezone.localdate() - dt.timedelta(days=2)).isoformat())
    page.fill("#id_note", "<script>alert(1)</script> margin slid for weeks")
    page.get_by_role("button", name="Report the miss").click()
    page.wait_for_load_state()
    assert "Miss recorded on Harbor <Tower>" in page.inner_text(".messages")
    row = page.locator("table tbody tr").first.inner_text()
    assert "Harbor <Tower>" in row and "Maria Lopez" in row and "any rule" in row
    miss = ReportedMiss.objects.get()
    assert (miss.subject_id, miss.outcome, miss.reported_by) == (mine.pk, "actioned", account_manager)
    screenshot(page, "report-miss-recorded")

    # Typed as the account manager knows it, by the project's number (no link, no Fulcrum number).
    page.fill("#id_subject_id", mine.number.lower())
    page.select_option("#id_outcome", "approved")
    page.get_by_role("button", name="Report the miss").click()
    page.wait_for_load_state()
    assert "Miss recorded on Harbor <Tower>" in page.inner_text(".messages")
    assert ReportedMiss.objects.filter(subject_id=mine.pk, outcome="approved").count() == 1
    # The refused post answered 400 (the browser logs that); nothing else went wrong on the pages.
    assert not page.watched.dialogs and not _csp_violations(page)
