"""What reaches log lines and error reports: never a password."""

from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host — the form DATABASE_URL and REDIS_URL take.
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.I)


class SecretsHidingFilter(SafeExceptionReporterFilter):
    """Django's filter, which hides settings named like secrets, also hiding the
    connection URLs and any URL with a password in it, wherever it is nested
    (CHANNEL_LAYERS' hosts, CACHES' location, the request's environment)."""

    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL|REDIS_URL", flags=re.I
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        # type(), not isinstance(): lazy objects (django-axes has some) claim to be str.
        if type(cleansed) is str and _URL_WITH_PASSWORD.search(cleansed):
            return self.cleansed_substitute
        return cleansed
