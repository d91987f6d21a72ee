from django.contrib import admin
from django.urls import include, path

from apps.dashboard.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("apps.dashboard.urls")),
    path("", include("apps.escalations.urls")),
    path("api/", include("config.api_urls")),
    path("webhooks/", include("apps.connectors.urls")),
]
