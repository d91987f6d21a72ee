import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("rules", "0002_immutable_versions"),
    ]

    operations = [
        migrations.CreateModel(
            name="RulesSettings",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "publish_confirm_threshold",
                    models.PositiveIntegerField(
                        default=25,
                        help_text=(
                            "Ask before publishing a draft that newly matches or drops more subjects than this"
                        ),
                    ),
                ),
            ],
            options={
                "verbose_name": "rules settings",
                "verbose_name_plural": "rules settings",
            },
        ),
        migrations.AddField(
            model_name="rule",
            name="shadow_since",
            field=models.DateTimeField(
                blank=True,
                help_text="While set, the draft is evaluated nightly beside the live version without acting",
                null=True,
            ),
        ),
        migrations.CreateModel(
            name="ShadowRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("ran_at", models.DateTimeField()),
                ("spec", models.JSONField(help_text="The draft evaluated, in the rules file shape")),
                (
                    "subject_type",
                    models.CharField(
                        choices=[
                            ("change_order", "Change order"),
                            ("project", "Project"),
                            ("client", "Client"),
                            ("submittal", "Submittal"),
                        ],
                        max_length=20,
                    ),
                ),
                ("subjects", models.PositiveIntegerField(help_text="Subjects evaluated")),
                ("counts", models.JSONField(help_text="The draft's outcomes: {outcome: count}")),
                (
                    "live_counts",
                    models.JSONField(blank=True, default=dict, help_text="The live version's outcomes"),
                ),
                ("would_match", models.PositiveIntegerField()),
                (
                    "added",
                    models.PositiveIntegerField(help_text="Matched by the draft, not by the live version"),
                ),
                (
                    "removed",
                    models.PositiveIntegerField(help_text="Matched by the live version, not by the draft"),
                ),
                ("sample_ids", models.JSONField(blank=True, default=list)),
                ("added_ids", models.JSONField(blank=True, default=list)),
                ("removed_ids", models.JSONField(blank=True, default=list)),
                ("error", models.TextField(blank=True, help_text="Why the draft could not be evaluated")),
                (
                    "live_version",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="rules.ruleversion",
                    ),
                ),
                (
                    "rule",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="shadow_runs",
                        to="rules.rule",
                    ),
                ),
            ],
            options={
                "ordering": ["-ran_at", "-id"],
                "indexes": [models.Index(fields=["rule", "-ran_at"], name="rules_shado_rule_id_4c5d69_idx")],
            },
        ),
    ]
