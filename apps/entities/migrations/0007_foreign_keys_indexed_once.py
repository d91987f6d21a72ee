"""Each foreign key indexed once: drop the single-column index of keys that a unique constraint or a
composite index already leads with (every synced row, decision and state paid a B-tree insert for it)."""

import django.db.models.deletion
from django.db import migrations, models

from apps.migration_ops import fk_indexes_dropped


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0009_foreign_keys_indexed_once"),
        ("entities", "0006_documents"),
    ]

    operations = [
        fk_indexes_dropped(
            [
                migrations.AlterField(
                    model_name="changeorder",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="change_orders",
                        to="entities.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="changeorder",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="client",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="crmowner",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="document",
                    name="change_order",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="documents",
                        to="entities.changeorder",
                    ),
                ),
                migrations.AlterField(
                    model_name="document",
                    name="project",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="documents",
                        to="entities.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="document",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="financialline",
                    name="project",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="money",
                        to="entities.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="financialline",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="milestone",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="milestones",
                        to="entities.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="milestone",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="project",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="sourceobject",
                    name="connection",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="submittal",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="vendor",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="connectors.connection",
                    ),
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
