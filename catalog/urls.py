from __future__ import annotations

from django.urls import path

from catalog import views

urlpatterns = [
    path("models/", views.model_list, name="model_list"),
    path("models/<int:pk>/", views.model_detail, name="model_detail"),
    path("hives/", views.hive_list, name="hive_list"),
    path("hives/<slug:name>/", views.hive_detail, name="hive_detail"),
]
