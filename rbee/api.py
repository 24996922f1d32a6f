"""The JSON API's frame: who may call it, the one error shape, the schema and its docs.

Every operation under /api/ is a django-ninja operation behind ``StaffAuth``: the
same rules as the pages' API decorator (session with CSRF on writes, or a bearer
token; staff only). Every refusal, whoever makes it (the auth, ninja's
validation, an unknown route, a wrong method, a body too large), answers
``{"error": "...", "fields": {"name": ["..."]}}`` with ``fields`` only when
there are per-field errors.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver, re_path, resolve
from django.urls.exceptions import Resolver404
from ninja import NinjaAPI, Schema
from ninja.errors import HttpError, ValidationError
from ninja.openapi.docs import Swagger
from ninja.openapi.views import openapi_view
from ninja.security.base import AuthBase

# Who may use the dashboard is decided in one module; the API imports it only here.
from accounts.auth import api_staff_required, staff_required

View = Callable[..., Any]


class ErrorOut(Schema):
    error: str
    fields: dict[str, list[str]] | None = None


# For the OpenAPI document: what any operation may answer besides its success.
ERRORS: dict[int, type[Schema]] = {status: ErrorOut for status in (400, 401, 403, 404, 413)}


class Refusal(Exception):
    """A request the API turns down, with the reason and, for bad input, per-field errors."""

    def __init__(self, status: int, error: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.fields = status, error, fields


class _Refused(Exception):
    """The auth check's own answer (401 or 403, with its headers), passed on as it is."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def error_response(status: int, error: str, fields: dict[str, list[str]] | None = None) -> JsonResponse:
    body: dict[str, Any] = {"error": error}
    if fields:
        body["fields"] = fields
    return JsonResponse(body, status=status)


_ADMITTED = HttpResponse(status=200)


def _admit(request: HttpRequest) -> HttpResponse:
    return _ADMITTED


# The pages' API decorator around a view that admits: its answer is either that
# view's response (let in) or its refusal, so both doors keep exactly one set of rules.
_screen = api_staff_required(_admit)


class StaffAuth(AuthBase):
    """Session (CSRF checked on writes) or ``Authorization: Bearer <token>``; staff only."""

    openapi_type = "http"
    openapi_scheme = "bearer"
    openapi_description = (
        "An API token (Django admin → API tokens) as `Authorization: Bearer <token>`, "
        "or the dashboard's session cookie with `X-CSRFToken` on writes. Staff users only."
    )
    # Tells ninja's docs page to send the CSRF token, so "Try it out" works signed in.
    csrf = True

    def __call__(self, request: HttpRequest) -> Any:
        response = _screen(request)
        if response is not _ADMITTED:
            raise _Refused(response)
        return request.user


def _docs_guard(view: View) -> View:
    """The docs page is a page (sign in first); the schema answers like the API."""
    if getattr(view, "func", None) is openapi_view:
        return staff_required(view)
    return api_staff_required(view)


def _field_name(loc: tuple[Any, ...]) -> str:
    # ninja's loc is (source, parameter, *path): ("body", "payload", "model"), ("query", "after").
    if len(loc) > 2:
        return ".".join(str(part) for part in loc[2:])
    source, name = (loc + ("", ""))[:2]
    return "body" if source == "body" else str(name)


# Typed Any: ninja hands a handler the exception (or, by its signature, its class).
def _refusal(request: HttpRequest, exc: Any) -> HttpResponse:
    return error_response(exc.status, exc.error, exc.fields)


def _refused(request: HttpRequest, exc: Any) -> HttpResponse:
    return exc.response


def _http_error(request: HttpRequest, exc: Any) -> HttpResponse:
    if exc.status_code == 400 and exc.message.startswith("Cannot parse request body"):
        return error_response(400, "the body must be JSON")
    return error_response(exc.status_code, exc.message)


def _invalid(request: HttpRequest, exc: Any) -> HttpResponse:
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        fields.setdefault(_field_name(tuple(error.get("loc", ()))), []).append(str(error.get("msg", "invalid")))
    summary = "; ".join(f"{name}: {', '.join(messages)}" for name, messages in fields.items())
    return error_response(400, f"invalid request: {summary}", fields)


def _too_large(request: HttpRequest, exc: Any) -> HttpResponse:
    return error_response(413, f"the request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")


def _not_found(request: HttpRequest, exc: Any) -> HttpResponse:
    return error_response(404, str(exc) or "not found")


def build_api() -> NinjaAPI:
    api = NinjaAPI(
        title="rbee model dashboard",
        version="1",
        description="Jobs, narration, catalog entries and hives; what every dashboard page does.",
        urls_namespace="api",
        auth=StaffAuth(),
        docs=Swagger(),
        docs_decorator=_docs_guard,
    )
    api.add_exception_handler(Refusal, _refusal)
    api.add_exception_handler(_Refused, _refused)
    api.add_exception_handler(HttpError, _http_error)
    api.add_exception_handler(ValidationError, _invalid)
    api.add_exception_handler(RequestDataTooBig, _too_large)
    api.add_exception_handler(Http404, _not_found)
    api.add_router("", "provisioner.catalog_api.router")
    api.add_router("", "provisioner.api.router")
    return api


def _as_json_error(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """ninja answers a wrong method with a plain-text 405; give it the API's shape."""
    if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
        return response
    if getattr(response, "streaming", False):
        return response
    if response.status_code == 405:
        error = f"{request.method} is not allowed here"
    else:
        error = getattr(response, "reason_phrase", "error").lower()
    answer = error_response(response.status_code, error)
    for header in ("Allow", "WWW-Authenticate"):
        if header in response:
            answer[header] = response[header]
    return answer


def _json_errors(view: View) -> View:
    if iscoroutinefunction(view):

        @wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return _as_json_error(request, await view(request, *args, **kwargs))

        return async_wrapper

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return _as_json_error(request, view(request, *args, **kwargs))
        except Http404:
            # ninja's root view (/api/) raises one, to say where the docs are.
            return error_response(404, f"no API route {request.path}; the docs are at /api/docs")

    return wrapper


def unknown_route(request: HttpRequest, rest: str = "") -> HttpResponse:
    path = request.path_info
    if not path.endswith("/"):
        try:
            resolve(path + "/")
        except Resolver404:
            pass
        else:
            return error_response(404, f"no API route {path}; did you mean {path}/?")
    return error_response(404, f"no API route {path}")


def urls() -> tuple[list[URLPattern | URLResolver], str, str]:
    """What rbee.urls mounts at /api/: ninja's routes, each answering errors as JSON,
    then a catch-all so an unknown route under /api/ is a JSON 404 too."""
    patterns, app_name, namespace = build_api().urls
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            pattern.callback = _json_errors(pattern.callback)  # type: ignore[misc]
            pattern.callback.csrf_exempt = True  # type: ignore[attr-defined]
    return [*patterns, re_path(r"^(?P<rest>.*)$", unknown_route)], app_name, namespace
