"""Operations shared by migrations."""

from __future__ import annotations

from django.db import migrations
from django.db.migrations.operations.base import Operation


def fk_indexes_dropped(fields: list[Operation], indexes: list[tuple[str, str, str]]) -> Operation:
    """``fields`` (``AlterField(db_index=False)`` of foreign keys another index leads with) in the state,
    and in the database only their indexes dropped: ``(table, column, index name)`` each.

    Django's own ``AlterField`` would also drop and re-add each foreign key constraint, which re-checks
    every row of the table under lock; dropping the index is all the change needs. Reversed, the index
    is built again under the name Django gave it.
    """
    return migrations.SeparateDatabaseAndState(
        state_operations=fields,
        database_operations=[
            migrations.RunSQL(
                f'DROP INDEX IF EXISTS "{name}"',
                reverse_sql=f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ("{column}")',
            )
            for table, column, name in indexes
        ],
    )
