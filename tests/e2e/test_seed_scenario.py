"""The seed scenario end to end: simulator → sync (in a Celery worker) → facts → co-exec-review →
executive escalations → SMTP emails and upstream notes → dashboard → audit chain.

Real parts only: PostgreSQL, the upstream simulator over loopback HTTP, a Celery worker process on the
configured Redis broker, an aiosmtpd server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from apps.accounts.demo import DEMO_RULES, demo_connections
from apps.accounts.models import NotificationSettings
from apps.accounts.roles import ACCOUNT_MANAGERS, EXECUTIVES
from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify
from apps.connectors.models import Connection, StreamState
from apps.connectors.services import connection_import
from apps.connectors.tasks import sync_connection_task
from apps.entities.models import ChangeOrder
from apps.escalations.models import Delivery, Escalation
from apps.orchestration.tasks import evaluate_all
from apps.rules.evaluation.services import rules_import
from apps.rules.models import Decision
from tests.factories import UserFactory

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
STREAMS = {
    "crm": {"owners", "companies"},
    "accounting": {"customers", "invoices", "bills", "purchases", "estimates"},
    "pm": {"projects", "vendors", "milestones", "change_orders", "submittals"},
}


def _sync_through_worker(slug: str) -> None:
    connection = Connection.objects.get(slug=slug)
    sync_connection_task.delay(connection.pk)

    def synced() -> bool:
        done = set(
            StreamState.objects.filter(connection=connection, last_success_at__isnull=False).values_list(
                "stream", flat=True
            )
        )
        return STREAMS[slug] <= done

    wait_for(synced, timeout=180, message=f"sync of {slug}")


def _planted_ids(items: list[dict]) -> set[str]:
    return {str(item["procore_change_order_id"]) for item in items}


def test_planted_change_orders_escalate_to_executives_and_nothing_else(
    simulator, smtp_server, celery_worker, client
):
    planted = simulator.company.planted
    matches = _planted_ids(planted["matches"])
    near_misses = _planted_ids(planted["near_misses"])
    assert len(matches) >= 10 and len(near_misses) >= 10

    executive = UserFactory(username="elena", email="elena.exec@fulcrum-demo.test")
    executive.groups.add(Group.objects.get(name=EXECUTIVES))
    # Executives get a digest by default; this one asked for one email per escalation, which this counts.
    NotificationSettings.objects.create(user=executive, digest_minutes=0)
    maria = UserFactory(username="maria", email="maria.chen@fulcrum-demo.test")
    maria.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    connection_import(data=demo_connections(simulator.base_url), actor="system:test")
    rules_import(text=DEMO_RULES.read_text(), actor="system:test")

    for slug in ("crm", "accounting", "pm"):
        _sync_through_worker(slug)

    # Exactly the planted change orders escalate, routed to executives.
    wait_for(lambda: Escalation.objects.count() >= len(matches), message="escalations")
    wait_for(
        lambda: (
            not Delivery.objects.exclude(state=Delivery.State.DELIVERED).exists()
            and Delivery.objects.count() > 0
        ),
        message="every delivery delivered",
    )
    escalations = list(Escalation.objects.select_related("client__owner"))
    escalated = set(
        ChangeOrder.objects.filter(pk__in=[e.subject_id for e in escalations]).values_list(
            "external_id", flat=True
        )
    )
    assert escalated == matches
    assert not escalated & near_misses
    assert {(e.route, e.severity, e.subject_type) for e in escalations} == {
        ("executive", "high", "change_order")
    }

    # Insufficient data is recorded as such, never as a silent "no".
    insufficient = _planted_ids(planted["insufficient"])
    assert insufficient, "the simulator plants insufficient-data cases"
    ids = ChangeOrder.objects.filter(external_id__in=insufficient).values_list("pk", flat=True)
    outcomes = set(Decision.objects.filter(subject_id__in=ids).values_list("outcome", flat=True))
    assert outcomes == {"insufficient_data"}

    # One email per escalation to its account manager and one to the executive; none twice.
    assert len(smtp_server.to(executive.email)) == len(matches)
    for escalation in escalations:
        owner_mail = [
            m
            for m in smtp_server.to(escalation.client.owner.email)
            if m["X-Fulcrum-Escalation"] == str(escalation.pk)
        ]
        assert len(owner_mail) == 1, escalation
        assert "Change order needs executive judgment" in owner_mail[0]["Subject"]
        body = owner_mail[0].get_body(preferencelist=("plain",)).get_content()
        assert f"http://fulcrum.test/escalations/{escalation.pk}/" in body
        assert "Change order amount" in body
    assert smtp_server.to(maria.email), "Maria owns at least one planted client"

    # A note written back into the CRM and into accounting for each escalation, exactly once.
    notes = simulator.notes
    assert len([n for n in notes if n["system"] == "hubspot"]) == len(matches)
    assert len([n for n in notes if n["system"] == "quickbooks"]) == len(matches)

    # The executive dashboard shows the flagged projects with why.
    client.force_login(executive)
    page = client.get("/dashboard/").content.decode()
    for escalation in escalations:
        assert escalation.project.number in page

    # Every decision that matched and every escalation opened is in an intact audit chain. A planted change
    # order may be decided twice (the pm sync marks it, and so may the linking after it, when the two marks
    # miss one coalescing window on a busy machine): its second match re-fires, and is audited too.
    matched = AuditEntry.objects.filter(action="decision.matched")
    assert matched.count() == Decision.objects.filter(outcome="matched").count()
    assert {e.data["subject"] for e in matched} == {f"change_order:{e.subject_id}" for e in escalations}
    assert AuditEntry.objects.filter(action="escalation.opened").count() == len(matches)
    assert audit_verify().ok

    # Evaluating again re-fires the open escalations without a second email or note.
    sent = len(smtp_server.messages)
    fired = dict(Escalation.objects.values_list("pk", "fire_count"))
    evaluate_all.delay("manual")
    wait_for(lambda: all(e.fire_count > fired[e.pk] for e in Escalation.objects.all()), message="re-fire")
    assert Escalation.objects.count() == len(matches)
    assert len(smtp_server.messages) == sent
    assert len(simulator.notes) == len(notes)
