"""Fulcrum's own face where Django's used to show: the admin's name and icon, one time zone, error pages
in Fulcrum's style, and one log line per refused request."""

from __future__ import annotations

import datetime as dt
import io
import logging

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.utils.log import configure_logging
from django.views.defaults import server_error

from apps.connectors.models import StreamState, SyncRun
from apps.rules.models import Decision
from tests.factories import ChangeOrderFactory, ConnectionFactory

pytestmark = pytest.mark.django_db


def test_admin_is_titled_fulcrum_and_names_its_icon(client, ops_manager):
    client.force_login(ops_manager)

    page = client.get(reverse("admin:index")).content.decode()

    assert "<title>Operations home | Fulcrum admin</title>" in page
    assert ">Fulcrum administration</a>" in page and "Django administration" not in page
    assert 'rel="icon" href="/static/favicon.svg"' in page


def test_the_favicon_is_served_and_the_browsers_default_path_finds_it(client):
    redirect = client.get("/favicon.ico")
    icon = client.get("/static/favicon.svg")

    assert redirect.status_code == 301 and redirect["Location"] == "/static/favicon.svg"
    assert icon.status_code == 200 and b"<svg" in b"".join(icon.streaming_content)


def test_admin_times_are_all_in_the_company_time_zone(client, administrator, settings):
    settings.TIME_ZONE = "America/Chicago"
    connection = ConnectionFactory(slug="crm")
    noon_utc = dt.datetime(2026, 1, 15, 18, 5, tzinfo=dt.UTC)  # 12:05 in Chicago
    SyncRun.objects.create(
        connection=connection,
        stream="companies",
        status=SyncRun.Status.SUCCEEDED,
        started_at=noon_utc,
        heartbeat_at=noon_utc,
        finished_at=noon_utc,
    )

    StreamState.objects.create(
        connection=connection,
        stream="companies",
        last_success_at=noon_utc,
        cursor={"updated_at": "2026-01-15T18:04:59+00:00", "id": "42"},
    )
    client.force_login(administrator)

    connections = client.get(reverse("admin:connectors_connection_changelist")).content.decode()
    runs = client.get(reverse("admin:connectors_syncrun_changelist")).content.decode()
    one = client.get(reverse("admin:connectors_connection_change", args=[connection.pk])).content.decode()

    assert "companies succeeded 2026-01-15 12:05" in connections and "18:05" not in connections
    assert "finished 12:05:00" in runs and "18:05" not in runs
    assert "updated since 2026-01-15 12:04:59 CST (after id 42)" in one and "18:0" not in one


def test_decisions_list_names_their_subjects_with_one_query_per_page(
    client, ops_manager, django_assert_max_num_queries
):
    from apps.rules.evaluation.services import rules_import
    from apps.rules.tests.test_services import rule_yaml

    rules_import(text=rule_yaml(), actor="system:test")
    from apps.rules.models import Rule

    version = Rule.objects.get().live_version
    orders = [ChangeOrderFactory(number=f"{n:03}", title=f"Extra footing {n}") for n in range(12)]
    now = dt.datetime.now(dt.UTC)
    Decision.objects.bulk_create(
        Decision(
            rule_version=version,
            subject_type="change_order",
            subject_id=co.pk,
            outcome="not_matched",
            trigger="sync",
            evaluated_at=now,
        )
        for co in orders
    )
    client.force_login(ops_manager)

    with django_assert_max_num_queries(12):
        page = client.get(reverse("admin:rules_decision_changelist")).content.decode()

    for co in orders:
        url = reverse("admin:entities_changeorder_change", args=[co.pk])
        assert f'<a href="{url}">CO {co.number} {co.title}</a>' in page


def test_not_found_is_fulcrums_page(client, account_manager):
    client.force_login(account_manager)

    response = client.get("/no-such-page/")

    assert response.status_code == 404
    page = response.content.decode()
    assert "<h1>Not found</h1>" in page and "/static/css/fulcrum.css" in page and "Fulcrum" in page


def test_refused_is_fulcrums_page(client, account_manager):
    client.force_login(account_manager)

    response = client.get(reverse("dashboard"))

    assert response.status_code == 403
    assert "You cannot open this page" in response.content.decode()


def test_server_error_is_fulcrums_page():
    response = server_error(RequestFactory().get("/"))

    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page and "/static/css/fulcrum.css" in page


class Printed:
    """What the console handlers on the way from ``django.request`` to the root printed."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def readouterr(self) -> str:
        return self.buffer.getvalue()


@pytest.fixture
def project_logging(settings):
    """The project's LOGGING applied as Django applies it at start (its defaults first), DEBUG on as in
    development, where Django's own console handler used to print every 4xx a second time. Every stream
    handler a ``django.request`` record reaches writes into one buffer."""
    settings.DEBUG = True
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    printed = Printed()
    logger: logging.Logger | None = logging.getLogger("django.request")
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(printed.buffer)
        logger = logger.parent if logger.propagate else None
    yield printed
    settings.DEBUG = False
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


def test_a_404_is_logged_once_without_a_traceback(client, project_logging):
    client.get("/no-such-page/")

    printed = project_logging.readouterr()
    assert printed.count("Not Found: /no-such-page/") == 1
    assert "Traceback" not in printed


def test_a_403_is_logged_once_without_a_traceback(client, account_manager, project_logging):
    client.force_login(account_manager)

    client.get(reverse("dashboard"))

    printed = project_logging.readouterr()
    assert printed.count("Forbidden (Permission denied): /dashboard/") == 1
    assert "Traceback" not in printed


def test_a_500_keeps_its_traceback(project_logging):
    logger = logging.getLogger("django.request")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.error("Internal Server Error: /x", exc_info=True, extra={"status_code": 500})

    printed = project_logging.readouterr()
    assert printed.count("Internal Server Error: /x") == 1 and "Traceback" in printed and "boom" in printed
