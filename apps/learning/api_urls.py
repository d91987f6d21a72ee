from django.urls import path

from . import api

urlpatterns = [
    path("rules/", api.RuleAnalyticsView.as_view(), name="analytics-rules"),
    path("fired-together/", api.FiredTogetherView.as_view(), name="analytics-fired-together"),
    path("suggestions/", api.SuggestionListView.as_view(), name="analytics-suggestions"),
    path("misses/", api.MissListCreateView.as_view(), name="analytics-misses"),
    path("risk-model/", api.RiskModelView.as_view(), name="analytics-risk-model"),
]
