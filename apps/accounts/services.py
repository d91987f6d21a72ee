"""Writes of a person's own settings."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.audit.services import audit_record

from .models import NotificationSettings

FIELDS = ("time_zone", "quiet_hours", "digest_minutes", "hourly_cap")


@transaction.atomic
def notification_settings_save(*, user: Any, data: dict[str, Any]) -> NotificationSettings:
    """Store a person's noise settings (validated by the form) with an audit entry of the change."""
    row, _ = NotificationSettings.objects.select_for_update().get_or_create(user=user)
    before = {f: getattr(row, f) for f in FIELDS}
    for field in FIELDS:
        if field in data:
            setattr(row, field, data[field])
    row.save()
    after = {f: getattr(row, f) for f in FIELDS}
    if after != before:
        audit_record(
            action="notification_settings.changed",
            actor=user,
            object_type="user",
            object_id=user.pk,
            data={"before": before, "after": after},
        )
    return row
