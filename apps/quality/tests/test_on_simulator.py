"""Resolution and the quality scan on the simulator's company after a real sync of the three systems."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from apps.connectors.models import Connection, StreamState
from apps.connectors.services import connection_import, sync_connection
from apps.entities.linking import link_entities
from apps.entities.models import MatchCandidate, Project, SourceObject
from apps.entities.resolution import entities_resolve
from apps.quality.models import Finding
from apps.quality.services import quality_scan
from apps.simulator import PROCORE_COMPANY_ID, REALM_ID, SimulatorServer, generate_company


@pytest.fixture
def synced(db: None, settings: Any) -> Iterator[dict[str, Connection]]:
    settings.FULCRUM = {
        **settings.FULCRUM,
        "HTTP_TIMEOUT": 5.0,
        "HTTP_MAX_RETRIES": 3,
        "HTTP_BACKOFF_BASE": 0.01,
    }
    company = generate_company(seed=42, scale=0.1, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    with SimulatorServer(company).start() as server:
        common = {"base_url": server.base_url, "schedule": "*/15 * * * *"}
        imported = connection_import(
            data=[
                {
                    "slug": "crm", "kind": "hubspot",
                    "credentials": {"access_token": "sim-hubspot-token"}, **common,
                },
                {
                    "slug": "accounting", "kind": "quickbooks", "options": {"realm_id": REALM_ID},
                    "credentials": {"access_token": "sim-qbo-token"}, **common,
                },
                {
                    "slug": "pm", "kind": "procore", "options": {"company_id": PROCORE_COMPANY_ID},
                    "credentials": {"access_token": "sim-procore-token"}, **common,
                },
            ],
            actor="system:test",
        )  # fmt: skip
        connections = {c.slug: c for c in imported}
        for slug in ("crm", "pm", "accounting"):
            sync_connection(connection=connections[slug])
        yield connections


def test_resolution_and_scan_after_a_real_sync(synced: dict[str, Connection]) -> None:
    exact = set(
        SourceObject.objects.filter(match_method__in=["domain", "origin_id", "project_number"]).values_list(
            "id", "client_id", "project_id"
        )
    )
    unlinked_before = SourceObject.objects.filter(object_type="customer", client__isnull=True).count()
    assert len(exact) > 10 and unlinked_before == 0  # the simulator's customers all carry their domain

    result = entities_resolve(propagate=False)

    # Fuzzy matching never touches what exact keys linked, and leaves no customer unresolved.
    assert exact <= set(SourceObject.objects.values_list("id", "client_id", "project_id"))
    unresolved = SourceObject.objects.filter(object_type="customer", client__isnull=True)
    assert unresolved.exclude(candidates__status="pending").count() == 0
    assert result.auto_linked + result.new_entities <= unlinked_before

    # Without their domains, the accounting customers are matched by name alone (QBO display names vs
    # HubSpot company names): never to the wrong client, and each to its own or into the review queue.
    customers = SourceObject.objects.filter(object_type="customer")
    truth = dict(customers.values_list("id", "client_id"))
    keys = dict(customers.values_list("id", "match_key"))
    customers.update(match_key="", client=None, match_method="")
    by_name = entities_resolve(propagate=False)
    outcome = Counter()
    for so in customers.prefetch_related("candidates"):
        pending = {c.client_id for c in so.candidates.all() if c.status == "pending"}
        if so.match_method == "fuzzy":
            outcome["right" if so.client_id == truth[so.pk] else "wrong"] += 1
        else:
            outcome[
                "queued with the right one" if truth[so.pk] in pending else so.match_method or "other"
            ] += 1
    print(f"\nname-only resolution of {len(truth)} customers: {dict(outcome)}; {by_name.auto_linked} linked")
    assert outcome["wrong"] == 0 and outcome["right"] + outcome["queued with the right one"] == len(truth)
    # Jobs too, without project numbers or origin ids: matched by name within their customer's client.
    jobs = SourceObject.objects.filter(object_type="job")
    job_truth = dict(jobs.values_list("id", "project_id"))
    job_keys = dict(jobs.values_list("id", "match_key"))
    refs = dict(Project.objects.values_list("id", "accounting_ref"))
    jobs.update(match_key="", project=None, match_method="")
    Project.objects.update(accounting_ref="")
    jobs_by_name = entities_resolve(propagate=False)
    job_outcome = Counter()
    for so in jobs.prefetch_related("candidates"):
        pending = {c.project_id for c in so.candidates.all() if c.status == "pending"}
        if so.match_method == "fuzzy":
            job_outcome["right" if so.project_id == job_truth[so.pk] else "wrong"] += 1
        else:
            job_outcome["queued with the right one" if job_truth[so.pk] in pending else "other"] += 1
    print(
        f"name-only resolution of {len(job_truth)} jobs: {dict(job_outcome)}; "
        f"{jobs_by_name.auto_linked} linked"
    )
    assert job_outcome["wrong"] == 0 and job_outcome["right"] >= 0.9 * len(job_truth)
    for so_id, key in job_keys.items():
        jobs.filter(pk=so_id).update(match_key=key, match_method="")
    for project_id, ref in refs.items():
        Project.objects.filter(pk=project_id).update(accounting_ref=ref)
    jobs.update(project=None)
    for so_id, key in keys.items():  # domains back: exact keys link them again, to the same clients
        SourceObject.objects.filter(pk=so_id).update(client=None, match_key=key, match_method="")
    MatchCandidate.objects.all().delete()
    assert link_entities()["customer_client"] == len(truth)
    assert dict(customers.values_list("id", "client_id")) == truth
    assert dict(jobs.values_list("id", "project_id")) == job_truth

    totals = quality_scan()
    checks = Counter(
        Finding.objects.filter(resolved_at__isnull=True).values_list("check_name", "severity").order_by()
    )
    # The simulator's company is consistent and just synced: no finding at all (no false positives).
    assert checks == Counter() and sum(t["seen"] for t in totals.values()) == 0
    assert StreamState.objects.filter(last_success_at=None).count() == 0

    # A reconciliation gone wrong tombstones 40% of the PM projects: one volume drop, nothing else new.
    projects = Project.objects.filter(source=synced["pm"]).order_by("pk")
    doomed = list(projects.values_list("pk", flat=True))[: int(projects.count() * 0.4) + 1]
    Project.objects.filter(pk__in=doomed).update(deleted_at=timezone.now())
    after = quality_scan()
    drop = Finding.objects.get(resolved_at__isnull=True)
    assert (drop.kind, drop.stream, drop.connection, drop.severity) == (
        "volume_drop",
        "project",
        synced["pm"],
        "warn",
    )
    assert sum(t["new"] for t in after.values()) == 1
