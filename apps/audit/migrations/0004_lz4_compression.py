"""Large JSON columns compressed with lz4 where the server supports it (see apps.bulk.lz4_columns)."""

from django.db import migrations

from apps.bulk import lz4_columns


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_data_as_hashed_text_fewer_indexes")]

    operations = [
        lz4_columns("audit_auditentry", "data"),
    ]
