from django.urls import path

from . import link_views, views

urlpatterns = [
    path("escalations/<int:pk>/", views.escalation_detail, name="escalation-detail"),
    path("escalations/<int:pk>/confirm/<str:action>/", views.escalation_confirm, name="escalation-confirm"),
    path("escalations/<int:pk>/act/", views.escalation_act, name="escalation-act"),
    path("my/escalations/", views.my_escalations, name="my-escalations"),
    path("escalations/link/<str:token>/", link_views.email_link, name="escalation-link"),
]
