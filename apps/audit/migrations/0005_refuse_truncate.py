from django.db import migrations

# TRUNCATE skips row triggers, so it gets a statement trigger of its own. The one way past it is for
# test databases: pytest-django empties every table with TRUNCATE between transactional tests, so a
# session of a database named test_* that sets fulcrum.allow_truncate=on (config.settings.test does, in
# the connection options) may truncate. A production database is never named test_*, and setting the
# option there changes nothing.

SQL = """
CREATE OR REPLACE FUNCTION fulcrum_refuse_truncate() RETURNS trigger AS $$
BEGIN
    IF current_setting('fulcrum.allow_truncate', true) = 'on' AND current_database() LIKE 'test\\_%' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_entry_no_truncate
    BEFORE TRUNCATE ON audit_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION fulcrum_refuse_truncate();
"""

REVERSE = """
DROP TRIGGER IF EXISTS audit_entry_no_truncate ON audit_auditentry;
DROP FUNCTION IF EXISTS fulcrum_refuse_truncate();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_lz4_compression")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
