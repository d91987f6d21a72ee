from django.db import migrations

SQL = """
CREATE TRIGGER rule_version_immutable
    BEFORE UPDATE ON rules_ruleversion
    FOR EACH ROW EXECUTE FUNCTION fulcrum_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("rules", "0001_initial"), ("audit", "0002_append_only")]
    operations = [migrations.RunSQL(SQL, "DROP TRIGGER IF EXISTS rule_version_immutable ON rules_ruleversion;")]
