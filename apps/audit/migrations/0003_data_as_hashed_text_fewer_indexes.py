"""Audit data kept as the canonical JSON text its hash covers; only the indexes someone reads.

``data`` goes from jsonb to text holding exactly the canonical JSON that each entry's hash was computed
over, i.e. ``canonical_json(json.loads(data::text))``, which is what verification re-derived until now:
an intact entry still verifies and an entry edited before this migration still fails. The text is
computed in chunks of ids, copied to a temporary table and set in one UPDATE (the append-only trigger
off for it, inside this migration's transaction, after the dropped indexes are gone) on a new column,
which then replaces the jsonb one.

Indexes dropped: ``hash`` (unique, plus its LIKE twin: random keys, the most expensive to maintain,
read by nothing), ``actor_user_id`` (no query filters on it) and the LIKE twin of ``action`` (no
prefix search). The ``action`` index stays under a new name; a BRIN on ``created_at`` serves export's
date ranges.
"""

import json

import django.contrib.postgres.indexes
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import apps.audit.fields

CHUNK = 5000


def _canonical(text: str) -> str:
    # The hashes' serialisation (apps.audit.models.canonical_json) of the value as stored.
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def data_to_text(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        # Appends wait for the migration: an entry written between the copy and the column swap would be
        # left without its text (and SET NOT NULL would fail the deploy).
        cursor.execute("LOCK TABLE audit_auditentry IN SHARE MODE")
        cursor.execute("CREATE TEMPORARY TABLE audit_canonical (id bigint, data text) ON COMMIT DROP")
        raw = cursor.cursor
        last = 0
        while True:
            cursor.execute(
                "SELECT id, data::text FROM audit_auditentry WHERE id > %s ORDER BY id LIMIT %s",
                [last, CHUNK],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            with raw.copy("COPY audit_canonical (id, data) FROM STDIN") as copy:
                for pk, text in rows:
                    copy.write_row((pk, _canonical(text)))
            last = rows[-1][0]
        cursor.execute("ALTER TABLE audit_auditentry ADD COLUMN data_text text")
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entry_append_only")
        cursor.execute(
            "UPDATE audit_auditentry a SET data_text = c.data FROM audit_canonical c WHERE a.id = c.id"
        )
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entry_append_only")
        cursor.execute("DROP TABLE audit_canonical")
        cursor.execute("ALTER TABLE audit_auditentry DROP COLUMN data")
        cursor.execute("ALTER TABLE audit_auditentry RENAME COLUMN data_text TO data")
        cursor.execute("ALTER TABLE audit_auditentry ALTER COLUMN data SET NOT NULL")


def data_to_jsonb(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditentry ALTER COLUMN data TYPE jsonb USING data::jsonb")


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_append_only"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditentry",
            name="actor_user",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="auditentry",
            name="hash",
            field=models.CharField(max_length=64),
        ),
        # The action index is kept (renamed to its new declaration), only its LIKE twin is dropped.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditentry",
                    name="action",
                    field=models.CharField(max_length=80),
                ),
                migrations.AddIndex(
                    model_name="auditentry",
                    index=models.Index(fields=["action"], name="audit_entry_action"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX audit_auditentry_action_dee621eb_like;"
                    "ALTER INDEX audit_auditentry_action_dee621eb RENAME TO audit_entry_action;",
                    "ALTER INDEX audit_entry_action RENAME TO audit_auditentry_action_dee621eb;"
                    "CREATE INDEX audit_auditentry_action_dee621eb_like "
                    "ON audit_auditentry (action varchar_pattern_ops);",
                ),
            ],
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditentry",
                    name="data",
                    field=apps.audit.fields.JSONTextField(default=dict),
                ),
            ],
            database_operations=[migrations.RunPython(data_to_text, data_to_jsonb)],
        ),
        migrations.AddIndex(
            model_name="auditentry",
            index=django.contrib.postgres.indexes.BrinIndex(
                fields=["created_at"], name="audit_entry_created_brin"
            ),
        ),
    ]
