"""The real URLs plus one view that fails, to see what a visitor gets from a 500."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def failing_view(request: HttpRequest) -> HttpResponse:
    secret = "postgres://rbee:hunter2@db/rbee"  # noqa: F841 - a local a traceback would show
    raise RuntimeError("the database fell over")


urlpatterns = [
    path("boom/", failing_view),
    path("", include("rbee.urls")),
]
