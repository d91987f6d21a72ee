from django.contrib import admin
from django.urls import include, path

from apps.dashboard.health import healthz
from apps.dashboard.security import RateLimitedLoginView, RateLimitedPasswordResetView
from apps.ops.metrics import metrics

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/password_reset/", RateLimitedPasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("account/", include("apps.accounts.urls")),
    # Before the pages: where a DRF route name equals a page's (escalation-detail), the page wins reverse().
    path("api/", include("config.api_urls")),
    path("", include("apps.dashboard.urls")),
    path("", include("apps.escalations.urls")),
    path("webhooks/", include("apps.connectors.urls")),
]
