"""Each foreign key indexed once: drop the single-column index of keys that a unique constraint or a
composite index already leads with (every synced row paid a B-tree insert for it)."""

from django.db import migrations, models
from django.db.models.deletion import CASCADE, PROTECT, SET_NULL

from apps.migration_ops import fk_indexes_dropped

# Every synced table's connection is indexed by its unique (source, external_id).
SOURCED = ["changeorder", "client", "crmowner", "document", "financialline", "milestone", "project"]
SOURCED += ["submittal", "vendor"]


def _unindexed(model_name: str, name: str, to: str, **options: object) -> migrations.AlterField:
    return migrations.AlterField(
        model_name=model_name, name=name, field=models.ForeignKey(db_index=False, to=to, **options)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0009_foreign_keys_indexed_once"),
        ("entities", "0006_documents"),
    ]

    operations = [
        fk_indexes_dropped(
            [
                *(
                    _unindexed(model, "source", "connectors.connection", on_delete=PROTECT, related_name="+")
                    for model in SOURCED
                ),
                _unindexed(
                    "sourceobject", "connection", "connectors.connection", on_delete=CASCADE, related_name="+"
                ),
                # Led by the models' Meta.indexes on (project, ...) and (change_order).
                _unindexed(
                    "changeorder",
                    "project",
                    "entities.project",
                    null=True,
                    on_delete=CASCADE,
                    related_name="change_orders",
                ),
                _unindexed(
                    "milestone",
                    "project",
                    "entities.project",
                    null=True,
                    on_delete=CASCADE,
                    related_name="milestones",
                ),
                _unindexed(
                    "financialline",
                    "project",
                    "entities.project",
                    blank=True,
                    null=True,
                    on_delete=SET_NULL,
                    related_name="money",
                ),
                _unindexed(
                    "document",
                    "project",
                    "entities.project",
                    blank=True,
                    null=True,
                    on_delete=SET_NULL,
                    related_name="documents",
                ),
                _unindexed(
                    "document",
                    "change_order",
                    "entities.changeorder",
                    blank=True,
                    null=True,
                    on_delete=SET_NULL,
                    related_name="documents",
                ),
            ],
            [
                ("entities_changeorder", "project_id", "entities_changeorder_project_id_6ea8068f"),
                ("entities_changeorder", "source_id", "entities_changeorder_source_id_5fd8dbe9"),
                ("entities_client", "source_id", "entities_client_source_id_252f9bf8"),
                ("entities_crmowner", "source_id", "entities_crmowner_source_id_5bffa454"),
                ("entities_document", "change_order_id", "entities_document_change_order_id_aec5354b"),
                ("entities_document", "project_id", "entities_document_project_id_58414803"),
                ("entities_document", "source_id", "entities_document_source_id_afcf8de1"),
                ("entities_financialline", "project_id", "entities_financialline_project_id_bf4e7a5f"),
                ("entities_financialline", "source_id", "entities_financialline_source_id_678c7557"),
                ("entities_milestone", "project_id", "entities_milestone_project_id_f5c503c2"),
                ("entities_milestone", "source_id", "entities_milestone_source_id_8a7e3605"),
                ("entities_project", "source_id", "entities_project_source_id_466531a1"),
                ("entities_sourceobject", "connection_id", "entities_sourceobject_connection_id_2270ee21"),
                ("entities_submittal", "source_id", "entities_submittal_source_id_87aea855"),
                ("entities_vendor", "source_id", "entities_vendor_source_id_7ade67aa"),
            ],
        )
    ]
