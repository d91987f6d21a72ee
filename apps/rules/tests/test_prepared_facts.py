"""An event's few subjects get their facts from a prepared statement on its generic plan: the same facts
as the query planned for the call (and as the query over every subject, which has no scope), the plan
setting put back, the query logged like any other."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.rules.evaluation import facts
from apps.rules.evaluation.facts import compute_contexts
from tests.factories import (
    ChangeOrderFactory,
    DocumentFactory,
    FinancialLineFactory,
    MilestoneFactory,
    ProjectFactory,
    SubmittalFactory,
)

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 15, 17, 0, tzinfo=dt.UTC)
SUBJECT_TYPES = ("change_order", "project", "client", "submittal", "document")


def _generated(seed: int) -> None:
    rng = random.Random(seed)
    today = NOW.date()
    projects = [
        ProjectFactory(contract_value=None if rng.random() < 0.2 else Decimal(rng.randint(1, 9) * 100_000))
        for _ in range(6)
    ]
    for project in projects:
        if rng.random() < 0.2:  # a deleted project or client keeps its live records' facts
            project.deleted_at = NOW
            project.save(update_fields=["deleted_at"])
        if rng.random() < 0.2:
            project.client.deleted_at = NOW
            project.client.save(update_fields=["deleted_at"])
        for _ in range(rng.randint(0, 3)):
            FinancialLineFactory(
                project=project, kind=rng.choice(["invoice", "bill", "purchase"]),
                amount=Decimal(rng.randint(1, 50_000)), balance=Decimal(rng.randint(0, 900)),
                due_date=today - dt.timedelta(days=rng.randint(-20, 60)),
            )  # fmt: skip
        for _ in range(rng.randint(0, 3)):
            due = today - dt.timedelta(days=rng.randint(-10, 40))
            done = None if rng.random() < 0.5 else due + dt.timedelta(days=rng.randint(-3, 9))
            MilestoneFactory(project=project, due_date=due, completed_date=done)
        for _ in range(rng.randint(0, 4)):
            co = ChangeOrderFactory(
                project=project, amount=Decimal(rng.randint(-5_000, 90_000)),
                created_upstream_at=NOW - dt.timedelta(days=rng.randint(0, 90)),
                deleted_at=NOW if rng.random() < 0.1 else None,
            )  # fmt: skip
            if rng.random() < 0.4:
                DocumentFactory(project=project, change_order=co, amount=Decimal(rng.randint(1, 90_000)),
                                confidence=rng.random())  # fmt: skip
        if rng.random() < 0.6:
            SubmittalFactory(project=project, due_date=today - dt.timedelta(days=rng.randint(-5, 30)))


def _contexts(subject_type: str, ids: list[int]) -> list[facts.Context]:
    return list(compute_contexts(subject_type, ids, now=NOW))


@pytest.mark.parametrize("seed", [1, 2])
def test_the_prepared_generic_plan_gives_the_facts_of_the_planned_query(seed, monkeypatch):
    _generated(seed)
    for subject_type in SUBJECT_TYPES:
        every = sorted(c.subject_id for c in compute_contexts(subject_type, None, now=NOW))
        assert every, subject_type
        # Ids of every width (the statement is prepared per parameter type) and one that is no subject.
        asks = [[i] for i in every] + [every, [*every[:2], 2**40]]
        prepared = [_contexts(subject_type, ids) for ids in asks]
        monkeypatch.setattr(facts, "PREPARED_LIMIT", 0)
        planned = [_contexts(subject_type, ids) for ids in asks]
        monkeypatch.undo()
        assert prepared == planned, subject_type
        # The query over every subject (no scope at all) gives each subject the same facts.
        assert list(compute_contexts(subject_type, None, now=NOW)) == prepared[len(every)], subject_type
        assert all(len(p) == 1 for p in prepared[: len(every)])


def test_the_statement_is_prepared_once_and_runs_on_its_generic_plan():
    cos = [ChangeOrderFactory() for _ in range(3)]
    for co in cos:
        _contexts("change_order", [co.pk])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%%FROM entities_changeorder co JOIN scope%%'"
        )
        rows = cursor.fetchall()
        cursor.execute("SHOW plan_cache_mode")
        mode = cursor.fetchone()[0]
    assert [(generic, custom) for generic, custom in rows] == [(3, 0)]
    assert mode == "auto"  # put back after each statement
    assert connection.connection.prepare_threshold is None  # Django's setting, put back


def test_more_subjects_than_the_limit_are_planned_for_the_call(monkeypatch):
    cos = [ChangeOrderFactory() for _ in range(3)]
    monkeypatch.setattr(facts, "PREPARED_LIMIT", 2)
    ids = sorted(co.pk for co in cos)
    assert [c.subject_id for c in _contexts("change_order", ids)] == ids
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0


def test_the_facts_query_is_logged_and_counted_as_any_other():
    co = ChangeOrderFactory()
    with CaptureQueriesContext(connection) as captured:
        _contexts("change_order", [co.pk])
    sqls = [q["sql"] for q in captured.captured_queries]
    assert sum("FROM entities_changeorder co JOIN scope" in sql for sql in sqls) == 1
    assert not any("plan_cache_mode" in sql for sql in sqls)


def test_a_failed_statement_leaves_the_plan_setting_as_it_was():
    with pytest.raises(DataError), transaction.atomic():
        facts._execute_generic("SELECT 1 / %(zero)s", {"zero": 0})
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "auto"
    assert connection.connection.prepare_threshold is None
    ChangeOrderFactory()
    assert len(list(compute_contexts("change_order", None, now=NOW))) == 1  # the connection still works
