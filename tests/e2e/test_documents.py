"""Documents from the simulator's document-AI tool, end to end: the three systems synced in a Celery worker,
then the tool pushes every analysis (Standard-Webhooks-signed) over loopback HTTP to Fulcrum's webhook
endpoint; the worker stores, links and evaluates them; the demo's document rules escalate exactly the
planted documents — none of the near-misses — and route the low-confidence one to a person by email.
Bad deliveries over the same HTTP path get the SPEC's answers.

Real parts only: PostgreSQL, the simulator over loopback HTTP, a live Fulcrum server, a Celery worker
process on the configured Redis broker, an aiosmtpd server.
"""

from __future__ import annotations

import copy
import json
import time

import pytest
import requests
from django.contrib.auth.models import Group

from apps.accounts.demo import DEMO_RULES, demo_connections
from apps.accounts.models import NotificationSettings
from apps.accounts.roles import ACCOUNT_MANAGERS, EXECUTIVES
from apps.connectors.models import Connection, WebhookDelivery
from apps.connectors.services import connection_import
from apps.entities.models import Document
from apps.escalations.models import Delivery, Escalation
from apps.rules.evaluation.services import rules_import
from apps.simulator.docai import PLANTED_DOCUMENTS, documents
from apps.simulator.webhooks import new_standard_secret, standard_delivery
from tests.factories import UserFactory

from .conftest import wait_for
from .test_seed_scenario import _sync_through_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DELTA_RULE = "doc-co-amount-exec-review"
CONFIDENCE_RULE = "doc-low-confidence"


def planted(outcome: str) -> set[str]:
    return {d.key for d in PLANTED_DOCUMENTS if d.outcome == outcome}


def escalated(rule: str) -> dict[str, Escalation]:
    found = Escalation.objects.filter(rule__key=rule, subject_type="document").select_related("project")
    ids = {e.subject_id: e for e in found}
    return {d.external_id: ids[d.pk] for d in Document.objects.filter(pk__in=ids)}


def test_planted_documents_escalate_exactly_and_low_confidence_goes_to_a_person(
    simulator, smtp_server, celery_worker, live_server, client
):
    executive = UserFactory(username="elena", email="elena.exec@fulcrum-demo.test")
    executive.groups.add(Group.objects.get(name=EXECUTIVES))
    NotificationSettings.objects.create(user=executive, digest_minutes=0)  # one email per escalation
    for name, mail in (
        ("maria", "maria.chen@fulcrum-demo.test"),
        ("james", "james.okafor@fulcrum-demo.test"),
    ):
        UserFactory(username=name, email=mail).groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    connection_import(data=demo_connections(simulator.base_url), actor="system:test")
    rules_import(text=DEMO_RULES.read_text(), actor="system:test")
    docs = Connection.objects.get(slug="docs")
    for slug in ("crm", "accounting", "pm"):
        _sync_through_worker(slug)

    # The tool pushes every analysis it holds to Fulcrum, signed, over loopback HTTP.
    answer = requests.post(
        f"{simulator.base_url}/_sim/docai/push",
        json={"url": f"{live_server.url}/webhooks/docs/", "secret": docs.webhook_secrets[0]},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    statuses = answer.json()["statuses"]
    assert statuses == [202] * len(documents(simulator.company))

    wait_for(
        lambda: WebhookDelivery.objects.filter(connection=docs, status="processed").count() == len(statuses),
        message="deliveries processed",
    )
    expected_exec, expected_person = planted("escalate"), planted("low_confidence")
    wait_for(
        lambda: (
            len(escalated(DELTA_RULE)) >= len(expected_exec)
            and len(escalated(CONFIDENCE_RULE)) >= len(expected_person)
        ),
        message="document escalations",
    )
    time.sleep(3)  # a late, wrong escalation would show here
    wait_for(
        lambda: (
            Delivery.objects.exists()
            and not Delivery.objects.exclude(state=Delivery.State.DELIVERED).exists()
        ),
        message="every delivery delivered",
    )

    # Exactly the planted documents escalate: none of the near-misses, nothing unlinked.
    by_delta = escalated(DELTA_RULE)
    assert set(by_delta) == expected_exec
    assert {e.route for e in by_delta.values()} == {"executive"}
    by_confidence = escalated(CONFIDENCE_RULE)
    assert set(by_confidence) == expected_person
    assert not (set(by_delta) | set(by_confidence)) & (planted("near_miss") | planted("unlinked"))
    assert Document.objects.get(external_id="invoice-unmatched").project_id is None

    # The low-confidence document is routed to a person: the account manager of its client, by email.
    [low] = by_confidence.values()
    assert low.route == "standard" and low.client is not None and low.client.owner is not None
    mails = [m for m in smtp_server.to(low.client.owner.email) if m["X-Fulcrum-Escalation"] == str(low.pk)]
    assert len(mails) == 1
    # Executives hear of each AI-read amount that differs from Procore's on a low-margin project.
    assert {m["X-Fulcrum-Escalation"] for m in smtp_server.to(executive.email)} >= {
        str(e.pk) for e in by_delta.values()
    }

    # Visible on the dashboard: the projects those documents are about are flagged, with the rule's name.
    client.force_login(executive)
    page = client.get("/dashboard/").content.decode()
    for escalation in by_delta.values():
        assert escalation.project is not None and escalation.project.number in page

    # The unlinked document is listed in admin.
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    listing = client.get("/admin/entities/document/?linked=no").content.decode()
    assert "invoice-unmatched" in listing and "co-delta-ironwood" not in listing


def test_bad_deliveries_over_http_get_the_spec_answers(simulator, celery_worker, live_server):
    connection_import(data=demo_connections(simulator.base_url), actor="system:test")
    docs = Connection.objects.get(slug="docs")
    url = f"{live_server.url}/webhooks/docs/"
    item = documents(simulator.company)[0]
    data = {"id": item["id"], "analyzeResult": item["analyzeResult"]}

    def post(headers: dict[str, str], body: bytes) -> requests.Response:
        return requests.post(url, data=body, headers=headers, timeout=30)

    forged = post(*standard_delivery(new_standard_secret(seed=5), "document.analyzed", data))
    assert forged.status_code == 401 and forged.json()["error"]
    stale = post(
        *standard_delivery(
            docs.webhook_secrets[0], "document.analyzed", data, timestamp=int(time.time()) - 900
        )
    )
    assert stale.status_code == 401 and "timestamp" in stale.json()["error"]
    bad = copy.deepcopy(data)
    bad["analyzeResult"]["documents"][0]["confidence"] = "high"
    malformed = post(*standard_delivery(docs.webhook_secrets[0], "document.analyzed", bad))
    assert malformed.status_code == 400
    assert (
        malformed.headers["Content-Type"] == "application/json" and "confidence" in malformed.json()["error"]
    )
    unknown = post(*standard_delivery(docs.webhook_secrets[0], "document.summarised", {"id": "d-1"}))
    assert unknown.status_code == 202

    kept = WebhookDelivery.objects.filter(connection=docs).order_by("pk")
    assert [d.status for d in kept[:3]] == ["rejected", "rejected", "rejected"]
    assert [bytes(d.body) != b"" for d in kept[:3]] == [True, True, True]
    wait_for(lambda: kept.filter(status="processed").exists(), message="the unknown type processed")
    processed = kept.get(status="processed")
    assert processed.summary.get("ignored") == 1, json.dumps(processed.summary)
    assert not Document.objects.exists()
