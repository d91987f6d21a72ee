"""A sync run records when what it stored was linked and marked for evaluation (``published_at``); a run
left unpublished (its worker died after committing pages) is published by the connection's next sync.
Runs from before this migration were published as they ended."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0009_foreign_keys_indexed_once"),
    ]

    operations = [
        migrations.AddField(
            model_name="syncrun",
            name="published_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When what the run stored was linked and marked for evaluation (empty: not yet; "
                "the connection's next sync does it)",
                null=True,
            ),
        ),
        migrations.RunSQL(
            "UPDATE connectors_syncrun SET published_at = COALESCE(finished_at, started_at)",
            migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name="syncrun",
            index=models.Index(
                condition=models.Q(("published_at__isnull", True)),
                fields=["connection"],
                name="sync_run_unpublished",
            ),
        ),
    ]
