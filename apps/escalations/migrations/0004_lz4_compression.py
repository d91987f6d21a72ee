"""Large JSON columns compressed with lz4 where the server supports it (see apps.bulk.lz4_columns)."""

from django.db import migrations

from apps.bulk import lz4_columns


class Migration(migrations.Migration):
    dependencies = [("escalations", "0003_policies_noise")]

    operations = [
        lz4_columns("escalations_escalation", "evidence", "opened_evidence"),
    ]
