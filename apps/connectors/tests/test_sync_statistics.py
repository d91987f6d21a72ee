"""Planner statistics are refreshed as soon as a table's last stream is done, before the streams after it."""

from __future__ import annotations

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

import apps.connectors.services as services
from apps.connectors.models import Connection
from apps.connectors.services import sync_connection


def test_a_parent_table_is_analysed_before_its_children_are_loaded(
    connections: dict[str, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "ANALYZE_AFTER_INSERTS", 1)

    with CaptureQueriesContext(db_connection) as queries:
        runs = sync_connection(connection=connections["pm"])

    assert [r.status for r in runs] == ["succeeded"] * 5
    order = [
        "milestones" if "INSERT INTO entities_milestone" in q["sql"] else q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("ANALYZE") or "INSERT INTO entities_milestone" in q["sql"]
    ]
    assert order.count('ANALYZE "entities_project"') == 1
    # Milestones join their projects as they are inserted: on statistics that know the projects are there.
    assert order.index('ANALYZE "entities_project"') < order.index("milestones")
