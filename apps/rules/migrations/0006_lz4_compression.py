"""Large JSON columns compressed with lz4 where the server supports it (see apps.bulk.lz4_columns)."""

from django.db import migrations

from apps.bulk import lz4_columns


class Migration(migrations.Migration):
    dependencies = [("rules", "0005_evaluation_runs")]

    operations = [
        lz4_columns("rules_decision", "facts", "explanation"),
        lz4_columns("rules_contextsnapshot", "values"),
    ]
