"""The runs' subject index keeps a whole run's entries in its pending list: the run merges them beside its
traces (``apps.rules.evaluation.runs.subject_index_merge``) instead of a later run's INSERT merging them.

The database side is one ALTER INDEX (recreating the GIN index over every run's subject list is not
needed); Django's state gets the index with its new option.
"""

import django.contrib.postgres.indexes
from django.db import migrations

NEW = django.contrib.postgres.indexes.GinIndex(
    fields=["subject_ids"], name="rules_evalrun_subjects_gin", gin_pending_list_limit=65536
)


class Migration(migrations.Migration):
    dependencies = [("rules", "0015_customfact_subject_document")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "ALTER INDEX rules_evalrun_subjects_gin SET (gin_pending_list_limit = 65536)",
                    "ALTER INDEX rules_evalrun_subjects_gin RESET (gin_pending_list_limit)",
                ),
            ],
            state_operations=[
                migrations.RemoveIndex(model_name="evaluationrun", name="rules_evalrun_subjects_gin"),
                migrations.AddIndex(model_name="evaluationrun", index=NEW),
            ],
        ),
    ]
