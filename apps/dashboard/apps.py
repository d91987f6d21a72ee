from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "apps.dashboard"
    label = "dashboard"

    def ready(self) -> None:
        from django.contrib import admin

        from .security import RateLimitedAdminAuthenticationForm, admin_login_limited

        # The admin login gets the same limiter as the site's login page, and its lockout answers 429 too.
        admin.site.login_form = RateLimitedAdminAuthenticationForm
        admin.site.login = admin_login_limited(admin.site.login)  # type: ignore[method-assign]
