"""The pending queue's claim index holds claimed rows only: marks are written unclaimed, and each paid a
B-tree insert of NULL (a full sync marks 157k subjects at scale 17)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("rules", "0018_foreign_keys_indexed_once"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="pendingevaluation",
            name="rules_pendi_claim_b8405e_idx",
        ),
        migrations.AddIndex(
            model_name="pendingevaluation",
            index=models.Index(
                condition=models.Q(("claim__isnull", False)), fields=["claim"], name="pending_claimed"
            ),
        ),
    ]
