"""An escalation keeps its opening decision instead of a second copy of its evidence.

A new escalation stored its evidence twice, as ``evidence`` and ``opened_evidence`` (the same value at
first), 1.7 kB compressed each: the row passed PostgreSQL's 2 kB TOAST threshold and one copy went to
the TOAST table. The evidence when it opened is the opening decision's facts and trace, which that
decision row already holds (retention keeps an opening decision's payload). Escalations opened before
this keep their ``opened_evidence``.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('escalations', '0007_escalation_fillfactor'),
        ('rules', '0019_pending_claim_index_partial'),
    ]

    operations = [
        migrations.AddField(
            model_name='escalation',
            name='opened_decision',
            field=models.ForeignKey(blank=True, db_index=False, help_text='The decision that opened it: its facts and trace are the evidence when it opened', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='rules.decision'),
        ),
        migrations.AlterField(
            model_name='escalation',
            name='opened_evidence',
            field=models.JSONField(blank=True, default=dict, help_text='The rule evidence when it opened, as stored by escalations opened before the opening decision was kept (newer ones: empty, see opened_decision)'),
        ),
    ]
