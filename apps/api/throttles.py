"""Rate limits whose rates are read per request, so tests and benchmarks can change them in settings.

DRF's stock throttles copy ``DEFAULT_THROTTLE_RATES`` into a class attribute at import time, which
``override_settings`` cannot reach.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


def _rate(scope: str | None) -> str | None:
    rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope or "")
    return str(rate) if rate else None


class UserThrottle(UserRateThrottle):
    def get_rate(self) -> str | None:
        return _rate(self.scope)


class AnonThrottle(AnonRateThrottle):
    def get_rate(self) -> str | None:
        return _rate(self.scope)
