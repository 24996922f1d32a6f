"""Settings for the rbee model dashboard, read from the environment.

One file for every deployment: the embedded default (SQLite, the in-memory channel
layer, downloads on a thread pool inside the web process) and the scaled one
(``DATABASE_URL`` for PostgreSQL, ``REDIS_URL`` for channels-redis, a hive worker
per machine consuming its hive's queue).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {number}")
    return number


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None


def env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default.resolve()


def env_size(name: str, default: int) -> int:
    """A byte count, plain or with a binary unit: ``1073741824``, ``512M``, ``1G``."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        return int(float(number) * factor)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a size like 1G or 512M, got {value!r}") from None


def env_secret(name: str, default: str = "") -> str:
    """A secret from ``NAME``, or from the file named by ``NAME_FILE`` (a Docker or
    systemd credential), so that it need not sit in the process environment."""
    file_name = os.environ.get(f"{name}_FILE")
    if not file_name:
        return os.environ.get(name, default)
    if os.environ.get(name):
        raise ImproperlyConfigured(f"Set {name} or {name}_FILE, not both")
    try:
        return Path(file_name).expanduser().read_text().strip()
    except OSError as error:
        raise ImproperlyConfigured(f"{name}_FILE names {file_name!r}, which cannot be read: {error.strerror}") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def private_dir(path: Path) -> Path:
    """Create ``path`` readable by this user only: it holds the database and the secret key."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is filtered through the umask
    return path


def private_file(path: Path) -> Path:
    """Create an empty ``path`` with mode 0600 unless it exists, so that what is written
    to it later (SQLite, and its WAL files, which take the database file's mode) is private."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    return path


def _secret_key(data_dir: Path) -> str:
    """Keep one generated key in the data dir so sessions survive restarts."""
    if key := env_secret("DJANGO_SECRET_KEY"):
        return key
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    private_dir(data_dir)
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


RBEE_DATA_DIR = env_path("RBEE_DATA_DIR", BASE_DIR / "data")
RBEE_MODELS_DIR = env_path("RBEE_MODELS_DIR", RBEE_DATA_DIR / "models")
RBEE_IMPORT_ROOTS = [
    Path(p).expanduser().resolve() for p in env_str("RBEE_IMPORT_ROOTS").split(":") if p
]
RBEE_MAX_CONCURRENT_DOWNLOADS = env_int("RBEE_MAX_CONCURRENT_DOWNLOADS", 2, minimum=1)
RBEE_DISK_RESERVE = env_size("RBEE_DISK_RESERVE", 1024**3)
RBEE_OLLAMA_REGISTRY = env_str("RBEE_OLLAMA_REGISTRY", "https://registry.ollama.ai").rstrip("/")
# The hive this process stands for: the web process of the embedded default is the
# "local" hive; a scaled hive worker names its own.
RBEE_HIVE = env_str("RBEE_HIVE", "local")
# Embedded default: the web process also runs the local hive's downloads. Off in tests
# and tools that import the ASGI application without serving it.
RBEE_EMBEDDED_WORKER = env_bool("RBEE_EMBEDDED_WORKER", True)
# Seconds added to the clock that download windows are read against: for trying a
# window's edges without waiting for them. 0 in production.
RBEE_CLOCK_SHIFT_S = env_float("RBEE_CLOCK_SHIFT_S", 0.0)
# Seconds without a byte before a request is abandoned and retried.
RBEE_STALL_TIMEOUT = env_float("RBEE_STALL_TIMEOUT", 30.0)
# Attempts per file that make no progress before the job fails.
RBEE_DOWNLOAD_ATTEMPTS = env_int("RBEE_DOWNLOAD_ATTEMPTS", 5, minimum=1)
RBEE_RETRY_BACKOFF = env_float("RBEE_RETRY_BACKOFF", 1.0)
# Connections one job may have open at once, shared by its files and their parts; a
# file of at least RBEE_PART_MIN_BYTES is fetched as several ranges in parallel.
RBEE_CONNECTIONS = env_int("RBEE_CONNECTIONS", 8, minimum=1)
RBEE_PART_MIN_BYTES = env_size("RBEE_PART_MIN_BYTES", 32 * 1024**2)
# Progress events per second per job (state changes are never throttled).
RBEE_PROGRESS_EVENTS_PER_S = env_float("RBEE_PROGRESS_EVENTS_PER_S", 4.0)
RBEE_HEARTBEAT_S = env_float("RBEE_HEARTBEAT_S", 10.0)
# Disks: an entry used within this many seconds is never evicted to make room.
RBEE_EVICT_MIN_IDLE_S = env_int("RBEE_EVICT_MIN_IDLE_S", 3600, minimum=0)
# Seconds between re-hashes of every entry against its recorded sha256 (0: never).
RBEE_VERIFY_EVERY_S = env_int("RBEE_VERIFY_EVERY_S", 0, minimum=0)
# Seconds between asking the source whether a branch or tag moved (0: never).
RBEE_UPDATE_CHECK_S = env_int("RBEE_UPDATE_CHECK_S", 21600, minimum=0)
RBEE_ADMIN_PASSWORD = env_secret("RBEE_ADMIN_PASSWORD")
# Fleet (scaled deployment): each hive worker serves its verified files to the other
# hives on RBEE_PEER_LISTEN and advertises RBEE_PEER_URL with its heartbeat; requests
# are signed with RBEE_FLEET_SECRET (unset: one generated into the shared database).
RBEE_PEER_LISTEN = env_str("RBEE_PEER_LISTEN", "0.0.0.0:8765")
RBEE_PEER_URL = env_str("RBEE_PEER_URL", "").rstrip("/")
RBEE_FLEET_SECRET = env_secret("RBEE_FLEET_SECRET")
# Seconds a follower waits for a peer that is downloading a file before asking the origin.
RBEE_PEER_WAIT_S = env_float("RBEE_PEER_WAIT_S", 60.0)

HF_ENDPOINT = env_str("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
HF_TOKEN = env_secret("HF_TOKEN") or None

# -- Mirrors, engines and fit (provisioner/vendors/huggingface.py, provisioner/engines.py) --
# Hub endpoints tried in order when one is down (a mirror on the network, then the
# Hub); unset: HF_ENDPOINT alone. A hive's own list (Hive.hf_endpoints) wins. Like
# HF_ENDPOINT they are configured, hence trusted.
RBEE_HF_ENDPOINTS = [e.rstrip("/") for e in env_list("RBEE_HF_ENDPOINTS")]
# The GPUs of this hive when nvidia-smi is not there to ask: "2x24G", "1x80G,1x24G".
RBEE_HIVE_GPUS = env_str("RBEE_HIVE_GPUS")

# -- Where downloads may connect (provisioner/vendors/transfer.py) ----------------------
# What admins type (URL references, ollama:HOST/… registries, and every redirect they
# lead to) may only reach public addresses: loopback, private, link-local (cloud
# metadata), multicast and other non-global addresses are refused before a connection
# is made. Hosts listed here are let through anyway: host names, IPs or CIDRs,
# comma-separated (e.g. "mirror.lan,10.20.0.0/16"). HF_ENDPOINT and
# RBEE_OLLAMA_REGISTRY are configured, hence trusted, and need no entry here.


def _allowed_private_hosts(name: str) -> list[str]:
    import ipaddress

    hosts = [h.strip().lower() for h in env_str(name).split(",") if h.strip()]
    for host in hosts:
        if "/" in host:  # anything else is an IP or a host name
            try:
                ipaddress.ip_network(host, strict=False)
            except ValueError:
                raise ImproperlyConfigured(f"{name}: {host!r} is not a valid CIDR such as 10.0.0.0/8") from None
    return hosts


RBEE_ALLOWED_PRIVATE_HOSTS = _allowed_private_hosts("RBEE_ALLOWED_PRIVATE_HOSTS")

SECRET_KEY = _secret_key(RBEE_DATA_DIR)
DEBUG = env_bool("DEBUG", False)
# A deployment reached over HTTPS by people other than its admin: secure cookies, HSTS,
# HTTPS redirect; `manage.py check --deploy` is clean under it (README: Production).
RBEE_PRODUCTION = env_bool("RBEE_PRODUCTION", False)
if RBEE_PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when RBEE_PRODUCTION is set: its error pages show settings and code")
PORT = env_int("PORT", 8000)
ALLOWED_HOSTS = [h for h in env_str("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("CSRF_TRUSTED_ORIGINS").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    # The JSON API; listed so its docs page uses the bundled Swagger UI, not a CDN.
    "ninja",
    "axes",
    "accounts",
    "catalog",
    "provisioner",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a lockout into the response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "rbee.urls"
ASGI_APPLICATION = "rbee.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_secret("DATABASE_URL")
if DATABASE_URL:
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(private_file(RBEE_DATA_DIR / "rbee.sqlite3")),
            "OPTIONS": {
                # Download threads and the web process write at once: WAL lets readers
                # go on, IMMEDIATE makes writers queue instead of failing on upgrade.
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not memory, so download threads in tests see the same database.
            "TEST": {"NAME": str(RBEE_DATA_DIR / "test.sqlite3")},
        }
    }

REDIS_URL = env_secret("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env_str("RBEE_REDIS_PREFIX", "rbee"),
                "capacity": 1000,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Scaled: downloads are queued in PostgreSQL through django-tasks-db and run by one
# `hive_worker` per hive, consuming that hive's queue. Embedded: a thread pool inside
# the web process. Either way the DownloadJob table is the durable record.
RBEE_SCALED = env_bool("RBEE_SCALED", bool(DATABASE_URL))
TASKS: dict[str, dict[str, Any]]
if RBEE_SCALED:
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {
        "default": {
            "BACKEND": "django_tasks_db.DatabaseBackend",
            "QUEUES": [],  # any queue name: one per hive
        }
    }
else:
    TASKS = {
        "default": {
            "BACKEND": "django_tasks_local.ThreadPoolBackend",
            "QUEUES": [],
            # Each hive's max_concurrent_downloads decides how many run; the pool only
            # has to be at least that big (catalog.models.MAX_CONCURRENT_DOWNLOADS).
            "OPTIONS": {"MAX_WORKERS": 32, "MAX_RESULTS": 200},
        }
    }

# Axes first: it refuses a locked-out login before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# The cache holds the API token throttle: Redis when there is one, so that every
# process counts the same failures.
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("RBEE_REDIS_PREFIX", "rbee"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Reverse proxies in front of the dashboard that append to X-Forwarded-For; 0 trusts none.
RBEE_TRUSTED_PROXY_COUNT = env_int("RBEE_TRUSTED_PROXY_COUNT", 0, minimum=0)

# Failed logins (django-axes, counted in the database): after RBEE_LOGIN_FAILURE_LIMIT
# failures an account is locked, and so is an address, for RBEE_LOGIN_COOLOFF_S seconds.
RBEE_LOGIN_FAILURE_LIMIT = env_int("RBEE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
RBEE_LOGIN_COOLOFF_S = env_int("RBEE_LOGIN_COOLOFF_S", 900, minimum=1)
AXES_FAILURE_LIMIT = RBEE_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=RBEE_LOGIN_COOLOFF_S)
# Either one: guessing one account from many addresses, or many accounts from one.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "accounts.auth.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.auth.locked_out_response"
AXES_HTTP_RESPONSE_CODE = 429

# Who may scrape /metrics: a bearer token, or an address in these networks.
RBEE_METRICS_TOKEN = env_secret("RBEE_METRICS_TOKEN")
RBEE_METRICS_ALLOW = env_list("RBEE_METRICS_ALLOW", "127.0.0.1/32,::1/128")
for _network in RBEE_METRICS_ALLOW:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"RBEE_METRICS_ALLOW: {_network!r} is not an address or a network") from None

# Wrong bearer tokens per address before the API answers 429, and the window they count in.
RBEE_TOKEN_FAILURE_LIMIT = env_int("RBEE_TOKEN_FAILURE_LIMIT", 20, minimum=1)
RBEE_TOKEN_FAILURE_WINDOW_S = env_int("RBEE_TOKEN_FAILURE_WINDOW_S", 600, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/models/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TZ", "UTC") or "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = RBEE_DATA_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
# No inline script or style anywhere, the admin's included (Django 6's admin has none).
# 'self' in connect-src also allows ws:/wss: to the same host (CSP Level 3).
# One exception by hash: htmx 2 inserts its request-indicator rules as a <style> element;
# the hash allows exactly that text (a test recomputes it from the installed htmx).
HTMX_INDICATOR_STYLE = "'sha256-faU7yAF8NxuMTNEwVmBz+VcYeIoBQ2EMHW3WaVxCvnk='"
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF, HTMX_INDICATOR_STYLE],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "object-src": [CSP.NONE],
}
# DATABASE_URL and REDIS_URL carry passwords: the debug page and error mails hide them.
DEFAULT_EXCEPTION_REPORTER_FILTER = "rbee.logs.SecretsHidingFilter"

if RBEE_PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("RBEE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("RBEE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("RBEE_HSTS_PRELOAD", True)
    SECURE_SSL_REDIRECT = env_bool("RBEE_SSL_REDIRECT", True)
    # Probes and scrapers talk plain HTTP to the process itself.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    # What the admin turned off on purpose is no warning of `check --deploy`.
    SILENCED_SYSTEM_CHECKS = [
        check
        for check, on in [
            ("security.W004", SECURE_HSTS_SECONDS),
            ("security.W005", SECURE_HSTS_INCLUDE_SUBDOMAINS),
            ("security.W021", SECURE_HSTS_PRELOAD),
            ("security.W008", SECURE_SSL_REDIRECT),
        ]
        if not on
    ]

# Only behind a proxy that sets it: otherwise any client could claim HTTPS.
if env_bool("RBEE_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

RBEE_LOG_FORMAT = env_str("RBEE_LOG_FORMAT", "plain")
if RBEE_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"RBEE_LOG_FORMAT must be plain or json, got {RBEE_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "rbee.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": RBEE_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # The Hub client logs request URLs at DEBUG; never let tokens near a log line.
        "huggingface_hub": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # Its INFO lines (a banner at every start, every login) are noise; lockouts stay.
        "axes": {"level": "WARNING"},
    },
}
