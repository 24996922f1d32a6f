from __future__ import annotations

from django.urls import path

from provisioner import health, metrics, views

urlpatterns = [
    path("models/<int:pk>/delete/", views.model_delete, name="model_delete"),
    path("hives/", views.fleet_page, name="fleet"),
    path("jobs/", views.jobs, name="jobs"),
    path("jobs/new/", views.job_new, name="job_new"),
    path("jobs/plan/", views.job_plan_preview, name="job_plan_preview"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry, name="job_retry"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]
