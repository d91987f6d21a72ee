# Built concurrently: the decisions table is the largest there is, and a plain CREATE INDEX would block
# evaluations (inserts) for as long as it takes.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("escalations", "0006_merge_20261205_2206"),
        ("rules", "0011_merge_20261205_2233"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="decision",
            index=models.Index(
                fields=["evaluated_at"],
                include=("rule_version", "outcome", "subject_type"),
                name="decision_evaluated_window",
            ),
        ),
    ]
