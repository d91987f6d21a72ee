"""A decision row as wide as a match's stays in its page instead of sending its facts to TOAST.

A traced decision holds its facts (~1 kB compressed) and its trace (~0.7 kB): about half of the rows of a
first run of 50 rules (16,158 of 33,509) passed PostgreSQL's default 2,032-byte threshold by a little,
and their facts were moved out of line, a second insert into the TOAST table and its index for each, and
a second lookup for every reader (a re-fire copies them into its escalation's evidence). With the target
at 2,600 bytes, a row past 2,032 bytes still goes to the toaster, which compresses its widest values until
the row fits 2,600 bytes and moves none out of line: in that run every decision's facts were compressed,
its trace too in 31,891 of 50,705 rows, and the widest row was 2,584 bytes. A row of 2,033-2,600 bytes
before compression is now stored as it is.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("rules", "0020_state_snoozed_by_partial")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE rules_decision SET (toast_tuple_target = 2600)",
            "ALTER TABLE rules_decision RESET (toast_tuple_target)",
        ),
    ]
