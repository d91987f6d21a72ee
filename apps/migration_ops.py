"""Operations shared by migrations."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from django.db.migrations.operations.base import Operation

# (model, field, related model "app.model", the index Django named, the key's other ForeignKey options)
UnindexedKey = tuple[str, str, str, str, dict[str, Any]]


def fk_indexes_dropped(app_label: str, keys: list[UnindexedKey]) -> Operation:
    """Foreign keys that another index already leads with, made ``db_index=False``: in the state an
    ``AlterField`` each, in the database only their indexes dropped.

    Django's own ``AlterField`` would also drop and re-add each foreign key constraint, which re-checks
    every row of the table under lock; dropping the index is all the change needs. Reversed, the index
    is built again under the name Django gave it.
    """
    return migrations.SeparateDatabaseAndState(
        state_operations=[
            migrations.AlterField(
                model_name=model,
                name=field,
                field=models.ForeignKey(db_index=False, to=to, **options),
            )
            for model, field, to, _index, options in keys
        ],
        database_operations=[
            migrations.RunSQL(
                f'DROP INDEX IF EXISTS "{index}"',
                reverse_sql=f'CREATE INDEX IF NOT EXISTS "{index}" ON "{app_label}_{model}" ("{field}_id")',
            )
            for model, field, _to, index, _options in keys
        ],
    )
