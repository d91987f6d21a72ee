"""The outbox's idempotency key keeps one index, its unique constraint.

``unique=True`` on a CharField made PostgreSQL two indexes: the unique one and a ``varchar_pattern_ops``
one for LIKE, which no query uses (lookups are by equality and ``IN``) and every outbox row paid for: a
first run of 50 rules over 100k change orders inserts ~21k. The field is now unique by a named
constraint, which builds the one index.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('escalations', '0008_escalation_opened_decision'),
    ]

    operations = [
        migrations.AlterField(
            model_name='delivery',
            name='idempotency_key',
            field=models.CharField(max_length=120),
        ),
        migrations.AddConstraint(
            model_name='delivery',
            constraint=models.UniqueConstraint(fields=('idempotency_key',), name='delivery_idempotency_key'),
        ),
    ]
