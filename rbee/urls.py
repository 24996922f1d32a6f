from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from rbee import api
from rbee.views import healthz

urlpatterns = [
    path("", RedirectView.as_view(url="/models/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", api.urls()),
    path("", include("catalog.urls")),
    path("", include("provisioner.urls")),
]
