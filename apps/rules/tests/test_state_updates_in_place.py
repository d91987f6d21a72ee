"""A run's updates of the subject states it just claimed stay on their pages: heap-only (HOT) updates,
no index touched.

A cold run creates a state for every pair it traces (33,528 in ``bench/evaluate.py``), then sets the
cooldown of each pair whose escalation it opened (11,816), in the same transaction. With full pages every
new row version went to another page and each of the table's four indexes got an entry for it; the table
keeps room in its pages instead (``fillfactor``), which a later run's claim of the same states can use
too once the old versions are pruned.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from apps.bulk import array_literal
from apps.escalations.opening import _COOLDOWNS
from apps.rules.evaluation.services import _claim_states
from apps.rules.models import Rule, SubjectState
from tests.pgstats import updates_in_place

pytestmark = pytest.mark.django_db


def test_a_run_updates_the_states_it_claimed_in_place():
    now = timezone.now()
    rule = Rule.objects.create(key="states", name="States", subject_type="change_order", draft={})
    subjects = range(1, 1201)  # a few dozen pages
    claimed = _claim_states("change_order", now, {(rule.pk, s): "matched" for s in subjects})
    assert len(claimed) == len(subjects)

    # The cold run's cooldowns: every state just inserted, updated again in the same transaction.
    with connection.cursor() as cursor:
        cursor.execute(
            _COOLDOWNS,
            [
                array_literal(rule.pk for _ in subjects),
                array_literal(subjects),
                [now + dt.timedelta(days=7)] * len(subjects),
                "change_order",
            ],
        )
    updated, in_place = updates_in_place(SubjectState)
    assert updated == len(subjects)
    # Full pages put none in place; a page whose room its neighbours' new versions took may not.
    assert in_place >= 0.9 * updated
