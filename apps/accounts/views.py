"""The person's own page: how and when Fulcrum emails them."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from .forms import NotificationSettingsForm
from .roles import EXECUTIVES
from .services import notification_settings_save

if TYPE_CHECKING:
    from apps.escalations.preferences import Preferences


@login_required
def notification_settings(request: HttpRequest) -> HttpResponse:
    from apps.escalations.preferences import defaults, preferences_for

    from .models import NotificationSettings

    user: Any = request.user
    row = NotificationSettings.objects.filter(user=user).first()
    form = NotificationSettingsForm(request.POST or None, instance=row)
    if request.method == "POST" and form.is_valid():
        notification_settings_save(user=user, data=form.cleaned_data)
        messages.success(request, "Your notification settings are saved.")
        return redirect("notification-settings")
    email = user.email or ""
    company = describe(defaults(executive=user.groups.filter(name=EXECUTIVES).exists()))
    return render(
        request,
        "accounts/notification_settings.html",
        {
            "form": form,
            "company": company,
            "effective": describe(preferences_for([email])[email]) if email else None,
            "email": email,
        },
    )


def _period(period: dt.timedelta) -> str:
    minutes = int(period.total_seconds() // 60)
    if minutes % 1440 == 0:
        return "day" if minutes == 1440 else f"{minutes // 1440} days"
    if minutes % 60 == 0:
        return "hour" if minutes == 60 else f"{minutes // 60} hours"
    return f"{minutes} minutes"


def describe(prefs: Preferences) -> dict[str, str]:
    """Preferences in words for the page."""
    quiet = f"{prefs.quiet[0]}:00 to {prefs.quiet[1]}:00" if prefs.quiet else ""
    return {
        "time_zone": prefs.tz.key,
        "quiet": quiet,
        "digest": f"every {_period(prefs.digest)}" if prefs.digest else "",
        "cap": f"{prefs.cap} emails an hour" if prefs.cap else "",
    }
