from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "apps.dashboard"
    label = "dashboard"

    def ready(self) -> None:
        from django.contrib import admin

        from .security import RateLimitedAdminAuthenticationForm

        # The admin login gets the same limiter as the site's login page.
        admin.site.login_form = RateLimitedAdminAuthenticationForm
