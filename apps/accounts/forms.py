from __future__ import annotations

from django import forms

from .models import NotificationSettings


class NotificationSettingsForm(forms.ModelForm):
    """A person's own noise settings; an empty field keeps the company default shown beside it."""

    class Meta:
        model = NotificationSettings
        fields = ("time_zone", "quiet_hours", "digest_minutes", "hourly_cap")
        labels = {
            "time_zone": "Your time zone",
            "quiet_hours": "Quiet hours",
            "digest_minutes": "Digest every (minutes)",
            "hourly_cap": "Emails per hour at most",
        }
        widgets = {
            "time_zone": forms.TextInput(attrs={"placeholder": "e.g. Europe/Berlin", "autocomplete": "off"}),
            "quiet_hours": forms.TextInput(attrs={"placeholder": "e.g. 22-7, or off"}),
        }
