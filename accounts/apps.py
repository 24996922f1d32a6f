from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and API tokens"

    def ready(self) -> None:
        # Signal receivers: lockouts are logged, a logout closes that session's sockets.
        from accounts import signals  # noqa: F401
