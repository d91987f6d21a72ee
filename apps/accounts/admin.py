from django.contrib import admin

from .models import NotificationSettings


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(admin.ModelAdmin):
    """Each person's noise settings; an empty field follows the company default (README, Configuration)."""

    list_display = ("user", "time_zone", "quiet_hours", "digest_minutes", "hourly_cap", "updated_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email")
    autocomplete_fields = ()
    raw_id_fields = ("user",)
    readonly_fields = ("updated_at",)
