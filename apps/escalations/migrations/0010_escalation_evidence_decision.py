"""An escalation's current evidence is its last firing decision's, kept by reference.

A re-fire copied its decision's facts and trace into ``evidence`` (2 kB of JSON built, compressed and
written per escalation: re-firing 11,816 escalations took 0.69-0.77 s copying, 0.15 s pointing at the
decision, measured in psql on the evaluate bench's database); it now points at
the decision (``evidence_decision``), as ``opened_decision`` already does for the evidence it opened on.
The column keeps its name and the copies that escalations which fired before this migration stored
(``evidence_copy`` in the model; ``Escalation.evidence`` reads either). No rows are rewritten.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("escalations", "0009_outbox_key_one_index"),
        ("rules", "0021_decision_toast_tuple_target"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RenameField("escalation", "evidence", "evidence_copy"),
                migrations.AlterField(
                    model_name="escalation",
                    name="evidence_copy",
                    field=models.JSONField(
                        blank=True,
                        db_column="evidence",
                        default=dict,
                        help_text="Facts and per-condition results when it last fired, as stored by "
                        "escalations that fired before the firing decision was kept (newer ones: empty, see "
                        "evidence_decision)",
                    ),
                ),
            ],
            database_operations=[],
        ),
        migrations.AddField(
            model_name="escalation",
            name="evidence_decision",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                help_text="The decision it last fired on (opened or re-fired): its facts and trace are the "
                "evidence",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="rules.decision",
            ),
        ),
    ]
