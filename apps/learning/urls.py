from django.urls import path

from . import views

urlpatterns = [
    path("learned/", views.learned, name="learning-learned"),
    path("misses/report/", views.miss_report_view, name="learning-report-miss"),
]
