"""Loaded with -p before pytest-django reads settings: a throwaway data dir per run."""

from __future__ import annotations

import os
import tempfile

_data = tempfile.mkdtemp(prefix="rbee-test-")
os.environ["RBEE_DATA_DIR"] = _data
os.environ.pop("RBEE_MODELS_DIR", None)
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ.pop("HF_TOKEN", None)
os.environ["RBEE_SCALED"] = "false"
# Importing rbee.asgi must not start the embedded worker inside the test process.
os.environ["RBEE_EMBEDDED_WORKER"] = "0"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HOME"] = os.path.join(_data, "hf-home")
os.environ.setdefault("RBEE_DISK_RESERVE", "0")
