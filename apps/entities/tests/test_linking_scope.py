"""A sync's scoped linking falls back to the whole-table statement when the rows in scope are many."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import apps.entities.linking as linking
from apps.entities.linking import link_entities
from apps.entities.models import FinancialLine

from .test_linking import World, refreshed, world  # noqa: F401 - the fixture


def _money_statement(queries: CaptureQueriesContext) -> str:
    return next(q["sql"] for q in queries.captured_queries if "UPDATE entities_financialline" in q["sql"])


def test_many_unlinked_rows_are_linked_by_the_whole_table_statement(
    world: World,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A first sync: the money arrived before the projects, so every line is still unlinked (the jobs were
    # linked when the projects came).
    link_entities()
    FinancialLine.objects.update(project=None)
    unlinked = FinancialLine.objects.filter(job_ref__gt="").count()
    assert unlinked >= 2
    monkeypatch.setattr(linking, "SCOPED_MAX", unlinked - 1)

    with CaptureQueriesContext(connection) as queries:
        counts = link_entities(touched={})

    assert "ANY(ARRAY(" not in _money_statement(queries)
    assert counts["financial_line_project"] >= 2
    line = world.objects["line2"]
    refreshed(line)
    assert line.project is not None


def test_few_unlinked_rows_are_linked_by_the_scoped_statement(world: World) -> None:  # noqa: F811
    link_entities()
    FinancialLine.objects.update(project=None)

    with CaptureQueriesContext(connection) as queries:
        counts = link_entities(touched={})

    assert "ANY(ARRAY(" in _money_statement(queries)
    assert counts["financial_line_project"] >= 2
