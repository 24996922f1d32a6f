"""On a first start with no users, create superuser ``admin``.

Password from RBEE_ADMIN_PASSWORD, or a random one printed once; also makes sure
the local hive exists so the download form has somewhere to send jobs.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from catalog.models import Hive


class Command(BaseCommand):
    help = "Create the first superuser (admin) and the local hive if missing."

    def handle(self, *args: Any, **options: Any) -> None:
        Hive.current()
        User = get_user_model()
        if User.objects.exists():
            return
        password = settings.RBEE_ADMIN_PASSWORD
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        if generated:
            self.stdout.write(
                self.style.WARNING(f"Created superuser 'admin' with password: {password}  (shown once; change it in /admin/)")
            )
        else:
            self.stdout.write("Created superuser 'admin' with the password from RBEE_ADMIN_PASSWORD.")
