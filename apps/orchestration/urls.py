from django.urls import path

from . import views

urlpatterns = [
    path("orchestration/", views.orchestration_map, name="orchestration-map"),
]
