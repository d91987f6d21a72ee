from django.contrib import admin
from django.urls import include, path

from apps.dashboard.health import healthz
from apps.dashboard.security import RateLimitedLoginView

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("account/", include("apps.accounts.urls")),
    # Before the pages: where a DRF route name equals a page's (escalation-detail), the page wins reverse().
    path("api/", include("config.api_urls")),
    path("", include("apps.dashboard.urls")),
    path("", include("apps.escalations.urls")),
    path("webhooks/", include("apps.connectors.urls")),
]
