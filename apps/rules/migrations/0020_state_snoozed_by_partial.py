"""A subject state's ``snoozed_by`` is indexed only where it is set.

Nearly every state is never snoozed, and each one inserted paid a B-tree insert of NULL into the
foreign key's index (a first run of 50 rules over 100k change orders inserts ~34k states). The partial
index serves what the full one did: finding a user's snoozes (``= user id`` implies not null).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('rules', '0019_pending_claim_index_partial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='subjectstate',
            name='snoozed_by',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='subjectstate',
            index=models.Index(condition=models.Q(('snoozed_by__isnull', False)), fields=['snoozed_by'], name='state_snoozed_by'),
        ),
    ]
