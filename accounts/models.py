from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone


def hash_token(raw: str) -> str:
    """Tokens are 32 random bytes, so a plain sha256 is enough: there is nothing to brute-force
    that a slow hash would protect, and a lookup by hash stays one indexed query."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for scripts; only its hash is stored, the raw value shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="After this moment the token is refused. Empty: it never expires."
    )

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user: models.Model, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        raw = "rbee_" + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, prefix=raw[:9], token_hash=hash_token(raw), expires_at=expires_at
        )
        return token, raw

    @classmethod
    def lookup(cls, raw: str) -> ApiToken | None:
        """The token with this value whose user may still sign in, expired or not: the
        caller tells an expired token apart so a script's owner knows to renew it."""
        token = cls.objects.select_related("user").filter(token_hash=hash_token(raw)).first()
        if token is None or not token.user.is_active:
            return None
        return token

    @classmethod
    def authenticate(cls, raw: str) -> ApiToken | None:
        """The valid, unexpired token with this value, marked as used; else None."""
        token = cls.lookup(raw)
        if token is None or token.has_expired():
            return None
        token.mark_used()
        return token

    def has_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def mark_used(self) -> None:
        # An UPDATE of one column, not save(): requests that use one token at once never
        # write back each other's stale copy of the row.
        self.last_used_at = timezone.now()
        type(self).objects.filter(pk=self.pk).update(last_used_at=self.last_used_at)
