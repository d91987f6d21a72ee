"""Room in the escalation table's pages for a re-fire's new row version (see
``apps/escalations/tests/test_refire_in_place.py``).

A re-fire rewrites an open escalation's evidence, about 1.7 kB compressed. With full pages (the default
``fillfactor`` 100) the new version goes to another page and every one of the table's ten indexes gets an
entry for it: a warm run of 50 rules re-fired 11,816 escalations in 0.99 s, of which 130 in place. With half
of each page kept free the new version stays on its page (a heap-only update, no index written): 0.50-0.58 s,
11,748 in place. Rows already stored keep their pages until rewritten; the table's heap doubles at most.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("escalations", "0006_merge_20261205_2206")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE escalations_escalation SET (fillfactor = 50)",
            "ALTER TABLE escalations_escalation RESET (fillfactor)",
        ),
    ]
