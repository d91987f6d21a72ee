"""The demo orchestrator's choices that tests can check without starting the whole stack."""

from __future__ import annotations

import datetime as dt

import time_machine

from apps.devstack.demo import company_today
from apps.rules.facts import evaluation_date


def test_the_simulator_is_given_the_day_the_facts_count_in():
    # TIME_ZONE defaults to America/Chicago, where 02:00 UTC on the 24th is still the 23rd: the planted
    # "renewal in 60 days" must be planted from the 23rd, or it is 61 days away when the rules look.
    with time_machine.travel(dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC), tick=False):
        assert company_today() == "2026-11-23" == evaluation_date(dt.datetime.now(dt.UTC)).isoformat()
