from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Touches nothing, so a slow database never gets a
    healthy process restarted (readiness is /readyz)."""
    return HttpResponse("ok", content_type="text/plain")
