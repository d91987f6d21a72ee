"""Room in the subject-state table's pages for a run's updates of the states it just claimed (see
``apps/rules/tests/test_state_updates_in_place.py``).

A cold run of 50 rules (``bench/evaluate.py``) inserts 33,528 states and then sets the cooldown of the
11,816 pairs whose escalation it opened: with full pages (the default ``fillfactor`` 100) none of those
updates stayed on its page and each wrote an entry in all four indexes (0.31-0.39 s at load 7-8); with
half of each page kept free all 11,816 are heap-only (0.10-0.21 s, same load). The table is narrow
(~150 bytes a row): its heap doubles at most.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("rules", "0016_evaluation_run_subject_index_pending")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE rules_subjectstate SET (fillfactor = 50)",
            "ALTER TABLE rules_subjectstate RESET (fillfactor)",
        ),
    ]
