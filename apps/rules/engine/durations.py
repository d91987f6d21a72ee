"""Durations as the rules file writes them: a positive whole number and a unit (``90m``, ``24h``, ``7d``)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS: dict[str, int] = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d{1,9})([smhd])")
# timedelta tops out near 2.7 million years; a rule with a longer cooldown is a typo.
_MAX_SECONDS = 100 * 365 * 86_400


def parse_duration(text: str) -> timedelta:
    """``"90m"`` → ``timedelta(minutes=90)``. Raises ``ValueError`` with a message fit for an operator."""
    if not isinstance(text, str):
        raise ValueError(
            f"expected a duration such as 90m, 24h or 7d (a whole number and a unit s, m, h or d), "
            f"got {text!r}"
        )
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; write a whole number and a unit s, m, h or d, "
            "such as 90m, 24h or 7d"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    if seconds > _MAX_SECONDS:
        raise ValueError(f"{text!r}: a duration must be at most 100 years")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration`, in the largest unit that divides exactly (24h → ``1d``)."""
    if value.microseconds:
        raise ValueError(f"{value} is not a whole number of seconds")
    seconds = value.days * 86_400 + value.seconds
    if seconds <= 0:
        raise ValueError(f"{value}: a duration must be more than zero")
    for unit, size in _UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds is a multiple of 1s")
