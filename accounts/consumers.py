"""Websockets that live no longer than the login that opened them."""

from __future__ import annotations

import hashlib
from typing import Any


def session_group(session_key: str) -> str:
    """The channel group of one login session. Hashed: the key itself is a credential,
    and group names travel through Redis."""
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:40]


class SessionBoundConsumerMixin:
    """Put first in a websocket consumer's bases: an accepted socket joins its session's
    group, and logging out of that session (``user_logged_out``) closes it.

    It hooks ``accept()``, so a consumer that refuses a connection never joins, and
    adds the group to ``self.groups``, which channels leaves on disconnect.
    """

    channel_layer: Any
    channel_name: str
    groups: list[str]
    scope: dict[str, Any]

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        session = self.scope.get("session")
        if session is not None and session.session_key:
            group = session_group(session.session_key)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups = [*self.groups, group]
        await super().accept(subprotocol, headers)  # type: ignore[misc]

    async def session_ended(self, message: dict[str, Any]) -> None:
        # 4401: the application's "unauthorized"; the page's reconnect then finds no login.
        await self.close(code=4401)  # type: ignore[attr-defined]
