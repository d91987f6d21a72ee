"""Each foreign key indexed once: drop the single-column index of keys that a unique constraint or a
composite index already leads with (every synced row paid a B-tree insert for it)."""

from django.db import migrations
from django.db.models.deletion import CASCADE, PROTECT, SET_NULL

from apps.migration_ops import fk_indexes_dropped

# Every synced table's connection, indexed by its unique (source, external_id): model and index name.
SOURCES = [
    ("changeorder", "entities_changeorder_source_id_5fd8dbe9"),
    ("client", "entities_client_source_id_252f9bf8"),
    ("crmowner", "entities_crmowner_source_id_5bffa454"),
    ("document", "entities_document_source_id_afcf8de1"),
    ("financialline", "entities_financialline_source_id_678c7557"),
    ("milestone", "entities_milestone_source_id_8a7e3605"),
    ("project", "entities_project_source_id_466531a1"),
    ("submittal", "entities_submittal_source_id_87aea855"),
    ("vendor", "entities_vendor_source_id_7ade67aa"),
]
OPTIONAL = {"blank": True, "null": True, "on_delete": SET_NULL}


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0009_foreign_keys_indexed_once"),
        ("entities", "0006_documents"),
    ]

    operations = [
        fk_indexes_dropped(
            "entities",
            [
                *(
                    (
                        model,
                        "source",
                        "connectors.connection",
                        index,
                        {"on_delete": PROTECT, "related_name": "+"},
                    )
                    for model, index in SOURCES
                ),
                (
                    "sourceobject",
                    "connection",
                    "connectors.connection",
                    "entities_sourceobject_connection_id_2270ee21",
                    {"on_delete": CASCADE, "related_name": "+"},
                ),
                # Led by the models' Meta.indexes on (project, ...) and (change_order).
                (
                    "changeorder",
                    "project",
                    "entities.project",
                    "entities_changeorder_project_id_6ea8068f",
                    {"null": True, "on_delete": CASCADE, "related_name": "change_orders"},
                ),
                (
                    "milestone",
                    "project",
                    "entities.project",
                    "entities_milestone_project_id_f5c503c2",
                    {"null": True, "on_delete": CASCADE, "related_name": "milestones"},
                ),
                (
                    "financialline",
                    "project",
                    "entities.project",
                    "entities_financialline_project_id_bf4e7a5f",
                    {**OPTIONAL, "related_name": "money"},
                ),
                (
                    "document",
                    "project",
                    "entities.project",
                    "entities_document_project_id_58414803",
                    {**OPTIONAL, "related_name": "documents"},
                ),
                (
                    "document",
                    "change_order",
                    "entities.changeorder",
                    "entities_document_change_order_id_aec5354b",
                    {**OPTIONAL, "related_name": "documents"},
                ),
            ],
        )
    ]
