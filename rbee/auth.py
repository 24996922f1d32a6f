"""Who may use the dashboard: active staff users, by session or API token."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

View = Callable[..., HttpResponse]


def is_staff(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def staff_required(view: View) -> View:
    """Anonymous visitors go to the login page; signed-in non-staff get a 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_staff(request.user):
            raise PermissionDenied("The dashboard is for staff users.")
        return view(request, *args, **kwargs)

    return wrapper


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    def noop(_request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
        return HttpResponse()

    middleware = CsrfViewMiddleware(noop)
    return middleware.process_view(request, noop, (), {})


def api_staff_required(view: View) -> View:
    """Session (with CSRF on writes) or ``Authorization: Bearer <token>``; JSON errors."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        from catalog.models import ApiToken

        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            token = ApiToken.authenticate(header.removeprefix("Bearer ").strip())
            if token is None:
                return JsonResponse({"error": "invalid API token"}, status=401)
            request.user = token.user
        elif request.user.is_authenticated:
            if request.method not in ("GET", "HEAD", "OPTIONS") and (failure := _csrf_failure(request)):
                return JsonResponse({"error": "CSRF check failed"}, status=403) if failure else failure
        else:
            response = JsonResponse({"error": "authentication required"}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="rbee"'
            return response
        if not is_staff(request.user):
            return JsonResponse({"error": "staff users only"}, status=403)
        return view(request, *args, **kwargs)

    return wrapper
