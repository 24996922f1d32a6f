"""The dashboard's settings plus Django's built-in Content-Security-Policy, strict: no
'unsafe-inline', no eval. Browser tests start a live server with it to prove every page
works under such a policy."""

from __future__ import annotations

from django.utils.csp import CSP

from rbee.settings import *  # noqa: F403
from rbee.settings import MIDDLEWARE

MIDDLEWARE = [*MIDDLEWARE, "django.middleware.csp.ContentSecurityPolicyMiddleware"]
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF, "ws:"],
}
