"""Fact ages go by the entity a stream loads, whatever the stream is called.

A ``rest`` stream named ``jobs`` that loads projects gives ``project.*`` facts their age, so a rule with
``max_fact_age`` decides on them instead of answering *insufficient data* forever.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.connectors.models import Connection, StreamState
from apps.connectors.services import connection_import, sync_connection
from apps.connectors.tests.loopback import record, rest_stream, serve
from apps.entities.models import Project
from apps.orchestration.pipeline import evaluate_subjects
from apps.rules.evaluation.facts import ENTITY_STREAMS, compute_contexts, fact_ages, stream_entity
from apps.rules.evaluation.services import rules_import
from apps.rules.models import Decision
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db

RULE = """
- key: big-job
  name: Big job
  subject: project
  when:
    all:
      - {fact: project.contract_value, op: gte, value: 1000}
  route: standard
  severity: low
  priority: 50
  actions: [flag_dashboard]
  cooldown: 7d
  max_fact_age: 24h
"""


def _rest(base_url: str, streams: list[dict]) -> Connection:
    [connection] = connection_import(
        data=[
            {
                "slug": "inhouse",
                "kind": "rest",
                "base_url": base_url,
                "credentials": {"access_token": "t"},
                "options": {"settle_seconds": 0, "streams": streams},
            }
        ],
        actor="system:test",
    )
    return connection


def _other_entities_synced(minutes: int = 5, skip: tuple[str, ...] = ("project",)) -> None:
    synced = timezone.now() - dt.timedelta(minutes=minutes)
    for entity, streams in ENTITY_STREAMS.items():
        if entity in skip:
            continue
        source = ConnectionFactory(slug=f"src-{entity}")
        for stream in streams:
            StreamState.objects.create(connection=source, stream=stream, last_success_at=synced)


def test_a_rest_stream_named_jobs_gives_project_facts_their_age_and_rules_decide() -> None:
    _other_entities_synced()
    with serve() as upstream:
        upstream.records(
            "/jobs", [record(id="J-1", updated="2026-01-05T10:00:00Z", title="Pier", value="5000")]
        )
        connection = _rest(
            upstream.base_url,
            [rest_stream("jobs", "project", "/jobs", {"name": "title", "contract_value": "value"})],
        )
        [run] = sync_connection(connection=connection)
    assert run.status == "succeeded"
    project = Project.objects.get(source=connection)
    assert project.contract_value == Decimal("5000.00")

    ages = fact_ages(timezone.now())

    assert ages["project.contract_value"] is not None and ages["project.contract_value"] < 60
    assert ages["project.schedule_status"] is not None
    [context] = compute_contexts("project", [project.pk])
    assert context.ages["project.contract_value"] is not None

    rules_import(text=RULE, actor="system:test")
    evaluate_subjects(subject_type="project", ids=[project.pk])

    decision = Decision.objects.get(subject_type="project", subject_id=project.pk)
    assert decision.outcome == Decision.Verdict.MATCHED


def test_ages_follow_the_entity_a_stream_loads_not_its_name() -> None:
    now = timezone.now()
    rest = ConnectionFactory(
        slug="inhouse",
        kind="rest",
        options={
            "streams": [
                rest_stream("projects", "client", "/p", {"name": "n"}),  # named like projects, loads clients
                rest_stream("jobs", "project", "/j", {"name": "n"}),
            ]
        },
    )
    sheet = ConnectionFactory(slug="sheet", kind="csv")
    _other_entities_synced(skip=("project", "client"))
    StreamState.objects.create(
        connection=rest, stream="projects", last_success_at=now - dt.timedelta(hours=1)
    )
    StreamState.objects.create(connection=rest, stream="jobs", last_success_at=now - dt.timedelta(hours=2))
    StreamState.objects.create(
        connection=sheet, stream="csv:project", last_success_at=now - dt.timedelta(hours=3)
    )

    ages = fact_ages(now)

    assert ages["client.days_to_renewal"] == pytest.approx(3600)
    assert ages["project.contract_value"] == pytest.approx(3 * 3600)  # the least fresh of jobs and the CSV
    assert stream_entity(rest, "projects") == "client"
    assert stream_entity(sheet, "csv:submittal") == "submittal"
    # A state whose connection cannot place it falls back to the built-in stream names.
    assert stream_entity(ConnectionFactory(slug="old", kind="procore"), "companies") == "client"


def test_a_stream_that_never_succeeded_leaves_its_entity_without_age() -> None:
    _other_entities_synced()
    rest = ConnectionFactory(
        slug="inhouse",
        kind="rest",
        options={"streams": [rest_stream("jobs", "project", "/j", {"name": "n"})]},
    )
    StreamState.objects.create(connection=rest, stream="jobs", last_success_at=None)

    assert fact_ages(timezone.now())["project.contract_value"] is None


def test_ages_follow_a_stream_whose_connection_now_loads_another_entity() -> None:
    """What a stream loads is remembered per connection, kind and options: changing the options (or the
    kind) is seen by the next evaluation, as a stream state added or removed is."""
    now = timezone.now()
    _other_entities_synced(skip=("project", "client"))
    for entity in ("project", "client"):  # both known and fresh, through their built-in streams
        source = ConnectionFactory(slug=f"fresh-{entity}")
        for stream in ENTITY_STREAMS[entity]:
            StreamState.objects.create(connection=source, stream=stream, last_success_at=now)
    jobs = rest_stream("jobs", "project", "/j", {"name": "n"})
    rest = ConnectionFactory(slug="inhouse", kind="rest", options={"streams": [jobs]})
    StreamState.objects.create(connection=rest, stream="jobs", last_success_at=now - dt.timedelta(hours=5))
    before = fact_ages(now)
    assert before["project.contract_value"] == pytest.approx(5 * 3600)
    assert before["client.days_to_renewal"] == pytest.approx(0)

    rest.options = {"streams": [rest_stream("jobs", "client", "/j", {"name": "n"})]}
    rest.save(update_fields=["options"])
    after = fact_ages(now)
    assert after["project.contract_value"] == pytest.approx(0)
    assert after["client.days_to_renewal"] == pytest.approx(5 * 3600)

    rest.kind = "csv"  # a kind that cannot place "jobs": the built-in names do not know it either
    rest.save(update_fields=["kind"])
    assert fact_ages(now)["client.days_to_renewal"] == pytest.approx(0)
    StreamState.objects.create(connection=rest, stream="csv:client", last_success_at=None)
    assert fact_ages(now)["client.days_to_renewal"] is None
