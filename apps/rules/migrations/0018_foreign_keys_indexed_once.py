"""Each foreign key indexed once: drop the single-column index of keys that a unique constraint or a
composite index already leads with (every synced row, decision and state paid a B-tree insert for it)."""

import django.db.models.deletion
from django.db import migrations, models

from apps.migration_ops import fk_indexes_dropped


class Migration(migrations.Migration):
    dependencies = [
        ("rules", "0017_subjectstate_fillfactor"),
    ]

    operations = [
        fk_indexes_dropped(
            [
                migrations.AlterField(
                    model_name="decision",
                    name="rule_version",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="decisions",
                        to="rules.ruleversion",
                    ),
                ),
                migrations.AlterField(
                    model_name="subjectstate",
                    name="rule",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="states",
                        to="rules.rule",
                    ),
                ),
            ],
            [
                ("rules_decision", "rule_version_id", "rules_decision_rule_version_id_bfdcb445"),
                ("rules_subjectstate", "rule_id", "rules_subjectstate_rule_id_ac49cff3"),
            ],
        )
    ]
