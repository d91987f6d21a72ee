from django.urls import path

from . import views

urlpatterns = [
    path("learned/", views.learned, name="learning-learned"),
    path("model/", views.risk_model_page, name="learning-model"),
    path("misses/report/", views.miss_report_view, name="learning-report-miss"),
]
