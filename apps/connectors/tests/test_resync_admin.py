""" "Resync now" on the connection's page (administrators only) and the live page of that sync's progress."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.contrib.messages import get_messages
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.connectors.models import Connection, SyncRun
from apps.simulator import SimulatorServer

from .test_rest import rest_connection


def test_administrator_resyncs_from_the_connection_page_and_lands_on_its_progress(
    client: Any,
    administrator: Any,
    simulator: SimulatorServer,
    fast_http: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from apps.connectors.services import sync_connection

    connection = rest_connection(simulator, "page")
    client.force_login(administrator)
    page = client.get(reverse("admin:connectors_connection_change", args=[connection.pk])).content.decode()
    resync_url = reverse("admin:connectors_connection_resync", args=[connection.pk])
    assert f'action="{resync_url}"' in page and "Resync now</button>" in page

    with django_capture_on_commit_callbacks() as queued:
        response = client.post(resync_url)

    assert len(queued) == 1  # the sync task, sent once the request's transaction committed
    assert AuditEntry.objects.filter(action="connection.resync_requested", object_id=connection.slug).exists()
    progress_url = reverse("admin:connectors_connection_sync_progress", args=[connection.pk])
    assert response.status_code == 302 and response["Location"].startswith(progress_url + "?")
    assert set(parse_qs(urlsplit(response["Location"]).query)) == {"after", "since"}

    waiting = client.get(response["Location"]).content.decode()
    assert '<meta http-equiv="refresh" content="2">' in waiting and "Syncing…" in waiting

    sync_connection(connection=connection, streams=["projects"])  # the worker, one stream in

    halfway = client.get(response["Location"]).content.decode()
    run = SyncRun.objects.get(stream="projects")
    assert f"{run.counts['seen']:,} seen" in halfway and "waiting for a worker" in halfway
    assert 'http-equiv="refresh"' in halfway

    sync_connection(connection=connection, streams=["change_orders"])

    done = client.get(response["Location"]).content.decode()
    assert "Finished." in done and 'http-equiv="refresh"' not in done and "waiting" not in done


def test_the_progress_page_stops_reloading_once_every_stream_ran(
    client: Any, administrator: Any, simulator: SimulatorServer, fast_http: None
) -> None:
    from apps.connectors.services import sync_connection

    connection = rest_connection(simulator, "page")
    sync_connection(connection=connection)
    client.force_login(administrator)

    page = client.get(reverse("admin:connectors_connection_sync_progress", args=[connection.pk]))

    content = page.content.decode()
    assert page.context["done"] is True and 'http-equiv="refresh"' not in content
    assert "Finished." in content


def test_the_progress_page_waits_for_the_link_and_the_marks_then_says_when_they_never_came(
    client: Any, administrator: Any, simulator: SimulatorServer, fast_http: None
) -> None:
    import datetime as dt

    from django.utils import timezone

    from apps.connectors.services import sync_connection

    connection = rest_connection(simulator, "page")
    sync_connection(connection=connection)
    # Every stream has run; the worker is linking what they stored and marking it for evaluation.
    connection.runs.update(published_at=None)
    client.force_login(administrator)
    url = reverse("admin:connectors_connection_sync_progress", args=[connection.pk])

    linking = client.get(url).content.decode()
    assert "Linking…" in linking and '<meta http-equiv="refresh" content="2">' in linking
    assert "Finished." not in linking

    # Long after the last stream ended: the worker stopped before publishing; the next sync does it.
    connection.runs.update(finished_at=timezone.now() - dt.timedelta(minutes=3))
    stopped = client.get(url).content.decode()
    assert "Finished." in stopped and 'http-equiv="refresh"' not in stopped
    assert "the connection's next sync links it and marks it for evaluation" in stopped


def test_operations_managers_edit_connections_but_do_not_resync(
    client: Any, ops_manager: Any, simulator: SimulatorServer, fast_http: None
) -> None:
    connection = rest_connection(simulator, "page")
    client.force_login(ops_manager)

    page = client.get(reverse("admin:connectors_connection_change", args=[connection.pk])).content.decode()
    refused = client.post(reverse("admin:connectors_connection_resync", args=[connection.pk]))

    assert "Resync now</button>" not in page
    assert refused.status_code == 403
    assert not AuditEntry.objects.filter(action="connection.resync_requested").exists()


def test_a_disabled_connection_is_not_resynced(
    client: Any, administrator: Any, simulator: SimulatorServer, fast_http: None
) -> None:
    connection = rest_connection(simulator, "page")
    Connection.objects.filter(pk=connection.pk).update(enabled=False)
    client.force_login(administrator)

    response = client.post(reverse("admin:connectors_connection_resync", args=[connection.pk]), follow=True)

    assert any("is disabled" in str(m) for m in get_messages(response.wsgi_request))
    assert not AuditEntry.objects.filter(action="connection.resync_requested").exists()


def test_the_slug_help_text_reads_as_written(client: Any, administrator: Any) -> None:
    client.force_login(administrator)

    page = client.get(reverse("admin:connectors_connection_add")).content.decode()

    # Admin renders help texts as HTML: "/webhooks/<slug>/" used to show as "/webhooks//".
    assert "/webhooks/SLUG/ (slug crm: /webhooks/crm/)" in page
