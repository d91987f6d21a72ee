"""Each foreign key indexed once: drop the single-column index of keys that a unique constraint or a
composite index already leads with (every synced row, decision and state paid a B-tree insert for it)."""

import django.db.models.deletion
from django.db import migrations, models

from apps.migration_ops import fk_indexes_dropped


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0008_connection_kind_choices_from_registry"),
    ]

    operations = [
        fk_indexes_dropped(
            [
                migrations.AlterField(
                    model_name="webhookdelivery",
                    name="connection",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="webhook_deliveries",
                        to="connectors.connection",
                    ),
                ),
            ],
            [
                (
                    "connectors_webhookdelivery",
                    "connection_id",
                    "connectors_webhookdelivery_connection_id_d1f0bab1",
                ),
            ],
        )
    ]
