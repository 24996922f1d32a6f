"""ASGI entry point: HTTP (with static files) and the job websockets.

In the embedded default this process is also the local hive's worker, so it
repairs the hive's disk and requeues unfinished jobs as it starts.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousFileOperation  # noqa: E402
from django.http import FileResponse, Http404, HttpRequest, HttpResponse  # noqa: E402

from provisioner.routing import websocket_urlpatterns  # noqa: E402


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's static files handler, with a path that climbs out of the static folders
    (``/static/../settings.py``) answered as what it is to a visitor, a file that is
    not there: 404, where Django's raises and the server answers 500."""

    def serve(self, request: HttpRequest) -> HttpResponse | FileResponse:
        try:
            response = super().serve(request)
        except SuspiciousFileOperation:
            raise Http404("No such static file") from None
        # Static files skip the middleware that sets this on every other response.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


application = ProtocolTypeRouter(
    {
        "http": StaticFilesHandler(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

if not settings.RBEE_SCALED and settings.RBEE_EMBEDDED_WORKER:
    from provisioner.worker import start_embedded_worker  # noqa: E402

    start_embedded_worker()
