from django.urls import path

from . import views

urlpatterns = [
    path("escalations/<int:pk>/", views.escalation_detail, name="escalation-detail"),
    path("escalations/<int:pk>/act/", views.escalation_act, name="escalation-act"),
    path("my/escalations/", views.my_escalations, name="my-escalations"),
]
