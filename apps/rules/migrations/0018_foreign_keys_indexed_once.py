"""Each foreign key indexed once: drop the single-column index of keys that a unique constraint or a
composite index already leads with (every decision and subject state paid a B-tree insert for it)."""

from django.db import migrations
from django.db.models.deletion import CASCADE, PROTECT

from apps.migration_ops import fk_indexes_dropped


class Migration(migrations.Migration):
    dependencies = [
        ("rules", "0017_subjectstate_fillfactor"),
    ]

    operations = [
        fk_indexes_dropped(
            "rules",
            [
                (
                    "decision",
                    "rule_version",
                    "rules.ruleversion",
                    "rules_decision_rule_version_id_bfdcb445",
                    {"on_delete": PROTECT, "related_name": "decisions"},
                ),
                (
                    "subjectstate",
                    "rule",
                    "rules.rule",
                    "rules_subjectstate_rule_id_ac49cff3",
                    {"on_delete": CASCADE, "related_name": "states"},
                ),
            ],
        )
    ]
