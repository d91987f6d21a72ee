"""Mounted at ``webhooks/`` by the root URLconf: one endpoint per connection, addressed by its slug."""

from django.urls import path

from apps.connectors.webhooks.views import receive

app_name = "webhooks"

urlpatterns = [
    path("<slug:slug>/", receive, name="receive"),
]
