from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from apps.dashboard.health import healthz
from apps.dashboard.security import RateLimitedLoginView, RateLimitedPasswordResetView
from apps.ops.metrics import metrics


class FaviconView(RedirectView):
    """/favicon.ico → the static icon, resolved per request (the manifest storage of production knows
    the hashed name only once collectstatic ran)."""

    permanent = True

    def get_redirect_url(self, *args: object, **kwargs: object) -> str:
        return static("favicon.svg")


# Fulcrum's admin, not "Django administration": the header, the browser tab and the home's heading.
admin.site.site_header = "Fulcrum administration"
admin.site.site_title = "Fulcrum admin"
admin.site.index_title = "Operations home"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    # Pages name their icon; this answers the browsers and tools that ask for /favicon.ico regardless.
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
    path("admin/", admin.site.urls),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/password_reset/", RateLimitedPasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("account/", include("apps.accounts.urls")),
    # Before the pages: where a DRF route name equals a page's (escalation-detail), the page wins reverse().
    path("api/", include("config.api_urls")),
    path("", include("apps.dashboard.urls")),
    path("", include("apps.orchestration.urls")),
    path("", include("apps.escalations.urls")),
    path("webhooks/", include("apps.connectors.urls")),
]
