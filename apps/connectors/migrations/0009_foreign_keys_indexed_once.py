"""Each foreign key indexed once: drop the single-column index of keys that a composite index already
leads with (every webhook delivery paid a B-tree insert for it)."""

from django.db import migrations
from django.db.models.deletion import CASCADE

from apps.migration_ops import fk_indexes_dropped


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0008_connection_kind_choices_from_registry"),
    ]

    operations = [
        fk_indexes_dropped(
            "connectors",
            [
                (
                    "webhookdelivery",
                    "connection",
                    "connectors.connection",
                    "connectors_webhookdelivery_connection_id_d1f0bab1",
                    {"on_delete": CASCADE, "related_name": "webhook_deliveries"},
                ),
            ],
        )
    ]
