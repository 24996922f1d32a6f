"""Who may use the dashboard: active staff users, by session or API token.

Also where a request's address is decided (for login lockouts, the API token
throttle and the metrics allowlist alike), and what a locked-out login sees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from accounts.models import ApiToken, hash_token

View = Callable[..., HttpResponse]
log = logging.getLogger(__name__)


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


def client_address(request: HttpRequest) -> str:
    """The address of whoever sent the request.

    Behind ``RBEE_TRUSTED_PROXY_COUNT`` reverse proxies it is the entry the outermost
    of them appended to X-Forwarded-For, counted from the right: everything left of it
    the client may have written itself. Without that setting the header is ignored.
    """
    count = settings.RBEE_TRUSTED_PROXY_COUNT
    if count:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if len(forwarded) >= count:
            return forwarded[-count]
    return str(request.META.get("REMOTE_ADDR", ""))


def locked_out_response(request: HttpRequest, response: Any = None, credentials: Any = None) -> HttpResponse:
    """The login page again, saying why it refuses (django-axes' AXES_LOCKOUT_CALLABLE)."""
    minutes = max(1, round(settings.RBEE_LOGIN_COOLOFF_S / 60))
    message = f"Too many failed logins. Try again in {minutes} minutes."
    if request.path.startswith("/api/") or not request.accepts("text/html"):
        return JsonResponse({"error": message}, status=429)
    # Bound without a password, so validating it never calls authenticate() again.
    form = AuthenticationForm(request, data={"username": request.POST.get("username", "")})
    form.is_valid()
    form.add_error(None, message)
    context = {"form": form, "next": request.POST.get("next", "")}
    return render(request, "registration/login.html", context, status=429)


def _token_failures_key(request: HttpRequest) -> str:
    # Hashed: an IPv6 address has characters memcached keys refuse.
    return "rbee:token-failures:" + hash_token(client_address(request))[:32]


def _token_attempts_exhausted(request: HttpRequest) -> bool:
    return int(cache.get(_token_failures_key(request), 0)) >= settings.RBEE_TOKEN_FAILURE_LIMIT


def _record_token_failure(request: HttpRequest) -> None:
    """Count a wrong token against the sender's address for RBEE_TOKEN_FAILURE_WINDOW_S.

    In the cache, so that it is shared between processes when the cache is Redis;
    ``add`` then ``incr`` so that concurrent failures are all counted.
    """
    key = _token_failures_key(request)
    cache.add(key, 0, timeout=settings.RBEE_TOKEN_FAILURE_WINDOW_S)
    try:
        failures = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, failures := 1, timeout=settings.RBEE_TOKEN_FAILURE_WINDOW_S)
    if failures == settings.RBEE_TOKEN_FAILURE_LIMIT:
        log.warning(
            "API token attempts throttled: %d wrong tokens from address %s",
            failures,
            client_address(request),
        )


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    def noop(_request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
        return HttpResponse()

    middleware = CsrfViewMiddleware(noop)
    return middleware.process_view(request, noop, (), {})


def _bearer_user(request: HttpRequest, raw: str) -> User | JsonResponse:
    """The user a bearer token stands for, or the JSON response that refuses it."""
    if _token_attempts_exhausted(request):
        response = JsonResponse({"error": "too many wrong API tokens from this address; try again later"}, status=429)
        response["Retry-After"] = str(settings.RBEE_TOKEN_FAILURE_WINDOW_S)
        return response
    token = ApiToken.lookup(raw)
    if token is None:
        _record_token_failure(request)
        return JsonResponse({"error": "invalid API token"}, status=401)
    if token.has_expired():
        return JsonResponse({"error": "token expired"}, status=401)
    token.mark_used()
    return token.user


def api_staff_required(view: View) -> View:
    """Session (with CSRF on writes) or ``Authorization: Bearer <token>``; JSON errors."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            user = _bearer_user(request, header.removeprefix("Bearer ").strip())
            if isinstance(user, JsonResponse):
                return user
            request.user = user
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
