"""The job websockets' routes: one definition, served by rbee.asgi and reversed by pages.

They are not Django URL patterns (HTTP never reaches them), but Django can reverse
them all the same when asked with this module as the URLconf.
"""

from __future__ import annotations

from typing import Any

from django.urls import path, reverse

from provisioner.consumers import JobConsumer, JobListConsumer

websocket_urlpatterns = [
    path("ws/jobs/", JobListConsumer.as_asgi(), name="jobs"),
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi(), name="job"),
]

# What reverse() reads from a URLconf module.
urlpatterns = websocket_urlpatterns


def socket_path(name: str, *args: Any) -> str:
    """The path of a websocket route, e.g. ``socket_path("job", 7)`` -> ``/ws/jobs/7/``."""
    return reverse(name, urlconf=__name__, args=args)
