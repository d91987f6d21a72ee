"""Custom facts get the label people read ("Pending change orders"); existing ones start from their key in
words (``co_pending_30d`` → "Co pending 30d"), as a built-in fact without a label does."""

from django.db import migrations, models


def label_from_key(apps, schema_editor):
    CustomFact = apps.get_model("rules", "CustomFact")
    for fact in CustomFact.objects.filter(label="").select_related("current"):
        spec = fact.current.spec if fact.current_id else {}
        fact.label = spec.get("label") or fact.key.replace("_", " ").capitalize()
        fact.save(update_fields=["label"])


class Migration(migrations.Migration):
    dependencies = [
        ("rules", "0015_customfact_subject_document"),
    ]

    operations = [
        migrations.AddField(
            model_name="customfact",
            name="label",
            field=models.CharField(
                blank=True,
                help_text="What people read for it on pages and in emails (the current version's label)",
                max_length=100,
            ),
        ),
        migrations.RunPython(label_from_key, migrations.RunPython.noop),
    ]
