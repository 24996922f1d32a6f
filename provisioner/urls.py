from __future__ import annotations

from django.urls import path

from provisioner import health, metrics, views

urlpatterns = [
    path("models/<int:pk>/delete/", views.model_delete, name="model_delete"),
    path("models/<int:pk>/pin/", views.model_pin, name="model_pin"),
    path("models/<int:pk>/verify/", views.model_job, {"kind": "verify"}, name="model_verify"),
    path("models/<int:pk>/repair/", views.model_job, {"kind": "repair"}, name="model_repair"),
    path("models/<int:pk>/update/", views.model_job, {"kind": "update"}, name="model_update"),
    path("models/<int:pk>/check-update/", views.model_check_update, name="model_check_update"),
    path("jobs/", views.jobs, name="jobs"),
    path("jobs/new/", views.job_new, name="job_new"),
    path("jobs/plan/", views.job_plan_preview, name="job_plan_preview"),
    path("jobs/search/", views.hub_search, name="hub_search"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry, name="job_retry"),
    path("jobs/<int:pk>/pause/", views.job_action, {"action": "pause"}, name="job_pause"),
    path("jobs/<int:pk>/resume/", views.job_action, {"action": "resume"}, name="job_resume"),
    path("jobs/<int:pk>/prioritize/", views.job_action, {"action": "prioritize"}, name="job_prioritize"),
    path("hives/", views.hive_list, name="hive_list"),
    path("hives/<slug:name>/", views.hive_detail, name="hive_detail"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]
