"""The tables every synced record, decision and webhook writes carry no index another one already covers:
each would cost every insert (and every non-HOT update) a B-tree insert and buy no query anything."""

from __future__ import annotations

import pytest
from django.db import connection

# Written per record of a sync, per decision of an evaluation, per webhook delivery.
HOT_TABLES = [
    "entities_crmowner",
    "entities_client",
    "entities_project",
    "entities_vendor",
    "entities_milestone",
    "entities_changeorder",
    "entities_submittal",
    "entities_financialline",
    "entities_document",
    "entities_sourceobject",
    "rules_decision",
    "rules_subjectstate",
    "connectors_webhookdelivery",
]

# A non-unique, non-partial index whose key columns (with their operator classes) lead another index of
# the same table: every lookup it serves, the other serves too.
_COVERED = """
    WITH idx AS (
        SELECT i.indrelid::regclass::text AS tbl, i.indexrelid::regclass::text AS name,
               string_to_array(i.indkey::text, ' ')::int[] AS cols,
               string_to_array(i.indclass::text, ' ')::oid[] AS classes,
               i.indisunique AS is_unique, i.indpred IS NOT NULL AS partial, i.indexprs IS NOT NULL AS expr
          FROM pg_index i
    )
    SELECT a.tbl, a.name, b.name
      FROM idx a JOIN idx b ON a.tbl = b.tbl AND a.name <> b.name
     WHERE a.tbl = ANY(%s) AND NOT a.is_unique AND NOT a.partial AND NOT a.expr AND NOT b.partial
       AND cardinality(a.cols) <= cardinality(b.cols)
       AND a.cols = b.cols[1:cardinality(a.cols)] AND a.classes = b.classes[1:cardinality(a.classes)]
     ORDER BY 1, 2
"""


@pytest.mark.django_db
def test_no_index_on_a_hot_table_is_covered_by_another() -> None:
    with connection.cursor() as cursor:
        cursor.execute(_COVERED, [HOT_TABLES])
        covered = cursor.fetchall()
    assert covered == []


@pytest.mark.django_db
def test_the_check_finds_a_covered_index() -> None:
    """The query above is not vacuous: an index on a column a unique constraint leads with is found."""
    with connection.cursor() as cursor:
        cursor.execute('CREATE INDEX "covered_probe" ON entities_changeorder (source_id)')
        cursor.execute(_COVERED, [HOT_TABLES])
        covered = cursor.fetchall()
    assert ("entities_changeorder", "covered_probe", "entities_changeorder_source_key") in covered
