"""Fixtures shared by the escalation tests."""

from __future__ import annotations

import datetime as dt

import pytest


@pytest.fixture
def noise(settings):
    """Settings with every noise control off, in Chicago time; each test turns on what it exercises."""
    settings.TIME_ZONE = "America/Chicago"
    settings.FULCRUM = {
        **settings.FULCRUM,
        "EXECUTIVE_DIGEST": False,
        "DIGEST_PERIOD": dt.timedelta(hours=1),
        "QUIET_HOURS": "",
        "RECIPIENT_HOURLY_CAP": 0,
    }
    return settings
