from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.api.exceptions import not_found

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's init script as a file of its own (no inline script for a CSP),
    # and SWAGGER_UI_DIST="SIDECAR" serves Swagger UI itself from our static files (no CDN).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("analytics/", include("apps.learning.api_urls")),
    path("", include("apps.api.urls")),
    re_path(r"^", not_found),
]
