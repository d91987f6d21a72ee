"""Per-person settings: how and when Fulcrum emails each person."""

from __future__ import annotations

import re
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models

QUIET_HOURS = re.compile(r"^(?P<start>\d{1,2})-(?P<end>\d{1,2})$")


def parse_quiet_hours(spec: str) -> tuple[int, int] | None:
    """``"22-7"`` → (22, 7): quiet from 22:00 to 07:00; ``"off"`` or empty → None. Raises ValueError with
    the reason for anything else."""
    text = (spec or "").strip().lower()
    if text in ("", "off"):
        return None
    match = QUIET_HOURS.match(text)
    if not match:
        raise ValueError(f"{spec!r}: write the start and end hours, e.g. 22-7, or off")
    start, end = int(match["start"]), int(match["end"])
    if not (0 <= start <= 23 and 0 <= end <= 23) or start == end:
        raise ValueError(f"{spec!r}: hours are 0-23 and the start differs from the end")
    return start, end


def _validate_quiet_hours(value: str) -> None:
    try:
        parse_quiet_hours(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def _validate_time_zone(value: str) -> None:
    if value:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationError(f"{value!r} is not a known time zone (e.g. Europe/Berlin)") from exc


class NotificationSettings(models.Model):
    """How and when one person is emailed: quiet hours in their own time zone, a digest period and an
    hourly cap. An empty field follows the company default (``FULCRUM_QUIET_HOURS``,
    ``FULCRUM_EXECUTIVE_DIGEST`` with ``FULCRUM_DIGEST_MINUTES`` for executives,
    ``FULCRUM_RECIPIENT_HOURLY_CAP`` and ``TIME_ZONE``); ``apps/escalations/noise.py`` applies them."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_settings"
    )
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        validators=[_validate_time_zone],
        help_text="Where you are, e.g. Europe/Berlin; empty: the company's time zone",
    )
    quiet_hours = models.CharField(
        max_length=5,
        blank=True,
        validators=[_validate_quiet_hours],
        help_text="No emails between these hours of your day, e.g. 22-7 (held until 07:00); "
        "off for none; empty: the company default",
    )
    digest_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(7 * 24 * 60)],
        help_text="One digest email every this many minutes instead of an email per new escalation "
        "(1440 = daily); 0 for none; empty: the company default",
    )
    hourly_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(1000)],
        help_text="At most this many emails an hour; the rest wait for your next digest, never dropped. "
        "0 for no cap; empty: the company default",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "notification settings"
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return f"Notification settings of {self.user}"
