"""What reaches log lines and error reports: JSON lines on request, never a password."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# Every attribute a LogRecord has before ``extra=`` adds its own.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (RBEE_LOG_FORMAT=json): time, level, logger, message,
    then whatever the call passed in ``extra``, for log shippers that index fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


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
