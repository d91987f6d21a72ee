"""Every admin page an operator can reach loads, for the superuser and for an operations manager."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from apps.connectors.models import Connection
from apps.escalations.tests.helpers import make_escalation

pytestmark = pytest.mark.django_db


@pytest.fixture
def data():
    escalation = make_escalation()
    connection = Connection.objects.create(slug="crm-x", kind="hubspot", base_url="http://127.0.0.1:9")
    connection.credentials = {"access_token": "tok-SECRET-123"}
    connection.webhook_secrets = ["whsec-SECRET-456"]
    connection.save()
    return escalation, connection


# No changelist may grow with its rows (the apps' own tests prove that per model with many rows); this
# caps what one page costs at all.
CHANGELIST_QUERY_CAP = 25


@pytest.mark.parametrize("persona", ["administrator", "ops_manager"])
def test_every_changelist_and_change_page_loads(
    request, client, data, persona, django_assert_max_num_queries
):
    user = request.getfixturevalue(persona)
    client.force_login(user)
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        with django_assert_max_num_queries(CHANGELIST_QUERY_CAP):
            response = client.get(changelist, follow=True)  # a settings singleton redirects to its one row
        allowed = model_admin.has_view_or_change_permission(type("R", (), {"user": user})())
        assert response.status_code == (200 if allowed else 403), (persona, changelist, response.status_code)
        obj = model._default_manager.first()
        if obj is not None and allowed:
            page = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
            assert page.status_code == 200, (persona, opts.label)


def test_connection_secrets_are_never_rendered(client, administrator, data):
    _, connection = data
    client.force_login(administrator)
    page = client.get(reverse("admin:connectors_connection_change", args=[connection.pk])).content.decode()
    assert "tok-SECRET-123" not in page and "whsec-SECRET-456" not in page
    assert connection.credentials_encrypted not in page


def test_blank_secret_fields_keep_the_stored_secrets(client, administrator, data):
    _, connection = data
    client.force_login(administrator)
    response = client.post(
        reverse("admin:connectors_connection_change", args=[connection.pk]),
        {
            "slug": "crm-x",
            "kind": "hubspot",
            "base_url": "http://127.0.0.1:9",
            "schedule": "",
            "options": "{}",
            "enabled": "on",
            "new_credentials": "",
            "new_webhook_secret": "rotated-789",
            "streams-TOTAL_FORMS": "0",
            "streams-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    connection.refresh_from_db()
    assert connection.credentials == {"access_token": "tok-SECRET-123"}
    assert connection.webhook_secrets == ["rotated-789", "whsec-SECRET-456"]
