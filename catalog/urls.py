from __future__ import annotations

from django.urls import path

from catalog import api, views

urlpatterns = [
    path("models/", views.model_list, name="model_list"),
    path("models/<int:pk>/", views.model_detail, name="model_detail"),
    path("api/models/", api.models_index, name="api_models"),
    path("api/models/<int:pk>/", api.model_detail, name="api_model"),
]
