"""The operators' journeys in a real browser with a real Celery worker: an operations manager publishes a
rule and watches its run open the escalations; an administrator resyncs a connection and watches it."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse

from apps.escalations.models import Escalation
from apps.rules.engine.ruleset import parse_rules
from apps.rules.evaluation.services import rules_import
from apps.rules.models import EvaluationRun, Rule
from apps.rules.tests.test_services import fresh_streams, risky_change_order, rule_yaml
from tests.e2e import conftest as e2e

from .conftest import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The end-to-end tests' real worker (on the test database) and the SMTP server it mails to.
celery_worker = e2e.celery_worker
smtp_server = e2e.smtp_server


def test_ops_publishes_a_rule_and_watches_its_run_open_the_escalations(page, ops_manager, celery_worker):
    fresh_streams()
    matches = [risky_change_order(amount=str(60000 + n)) for n in range(3)]
    risky_change_order(amount="100")
    rules_import(text=rule_yaml(amount=900000), actor="system:test")  # live: matches nothing
    e2e.wait_for(
        lambda: EvaluationRun.objects.filter(completed_at__isnull=False).exists(), message="first run"
    )
    rule = Rule.objects.get(key="big-co")
    rule.draft = parse_rules(rule_yaml(amount=50000))[0].to_dict()  # the edit ops saved
    rule.save()
    sign_in(page, ops_manager)

    page.goto(reverse("admin:rules_rule_change", args=[rule.pk]))
    page.get_by_role("link", name="Publish…").first.click()
    estimate = page.locator(".rule-publish-estimate")
    assert estimate.inner_text() == (
        "Publishing will evaluate 4 change orders now and open about 3 escalations."
    )
    screenshot(page, "publish-confirm")
    confirm = page.locator('input[name="confirm"]')
    if confirm.count():
        confirm.check()
    page.get_by_role("button", name="Publish as a new version").click()

    # The run's own page, reloading itself until the worker has finished.
    assert re.search(r"/admin/rules/evaluationrun/\d+/change/$", page.url)
    page.locator(".field-state .readonly").filter(has_text=re.compile(r"^complete$")).wait_for(timeout=60_000)
    links = page.locator("ul.run-escalations a")
    assert links.count() == 3
    screenshot(page, "publish-run-complete")
    opened = Escalation.objects.filter(rule__key="big-co")
    assert sorted(opened.values_list("subject_id", flat=True)) == sorted(co.pk for co in matches)
    assert page.locator(".field-progress_line").inner_text().count("escalations opened 3") == 1
    assert 'http-equiv="refresh"' not in page.content()

    page.goto(reverse("admin:rules_rule_change", args=[rule.pk]))
    assert "3 escalations opened" in page.locator(".field-publish_run").inner_text()


def test_administrator_resyncs_from_the_connection_page_and_sees_its_progress(
    page, administrator, celery_worker
):
    from apps.connectors.tests.test_rest import rest_connection
    from apps.simulator import SimulatorServer, generate_company

    company = generate_company(seed=42, scale=0.02, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    with SimulatorServer(company).start() as simulator:
        connection = rest_connection(simulator, "page")
        sign_in(page, administrator)

        page.goto(reverse("admin:connectors_connection_change", args=[connection.pk]))
        screenshot(page, "connection-page")
        page.get_by_role("button", name="Resync now").click()

        assert f"/admin/connectors/connection/{connection.pk}/sync-progress/" in page.url
        page.locator(".sync-state strong").filter(has_text=re.compile(r"^Finished\.$")).wait_for(
            timeout=90_000
        )
        rows = page.locator("table.sync-progress tbody tr")
        assert rows.count() == 2
        for i in range(2):
            assert "succeeded" in rows.nth(i).inner_text()
        screenshot(page, "resync-progress-finished")


def test_administrator_sees_a_sync_whose_worker_died_before_linking_and_marking(page, administrator):
    from django.utils import timezone

    from apps.connectors.models import Connection, SyncRun

    connection = Connection.objects.create(slug="pm-died", kind="procore", base_url="http://127.0.0.1:9")
    ended = timezone.now()
    for stream in ("projects", "vendors", "milestones", "change_orders", "submittals"):
        SyncRun.objects.create(
            connection=connection, stream=stream, status="succeeded", started_at=ended, heartbeat_at=ended,
            finished_at=ended, counts={"pages": 1, "seen": 10, "inserted": 10},
        )  # fmt: skip
    sign_in(page, administrator)
    progress = reverse("admin:connectors_connection_sync_progress", args=[connection.pk])

    # Every stream has just ended: the worker is linking and marking what they stored.
    page.goto(progress)
    assert page.locator(".sync-state").inner_text().startswith("Linking… Every stream has run;")
    assert page.locator('meta[http-equiv="refresh"]').count() == 1
    screenshot(page, "sync-progress-linking")

    # Five minutes on, nothing was published: the worker died before it.
    ended -= dt.timedelta(minutes=5)
    SyncRun.objects.filter(connection=connection).update(started_at=ended, finished_at=ended)
    page.goto(progress)
    state = page.locator(".sync-state").inner_text()
    assert state.startswith("Finished.")
    assert "the connection's next sync links it and marks it for evaluation" in state
    screenshot(page, "sync-progress-unpublished")

    page.goto(reverse("admin:connectors_syncrun_changelist") + f"?connection__id__exact={connection.pk}")
    icons = page.locator('td.field-published img[alt="False"]')
    assert icons.count() == 5
    assert page.locator("th.column-published").inner_text().strip().lower() == "linked"
    screenshot(page, "sync-runs-unpublished")
