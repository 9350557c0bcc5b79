"""Django system checks for rules that span several settings (ids collab.E00x)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

# HS256 keys shorter than the hash output are guessable offline from any token.
MIN_SECRET_BYTES = 32


@register()
def check_token_secret(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """The token secret must be long enough whenever it is set."""
    secret = settings.COLLAB_TOKEN_SECRET
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        return [
            Error(
                f"COLLAB_TOKEN_SECRET is shorter than {MIN_SECRET_BYTES} bytes",
                hint="generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                id="collab.E001",
            )
        ]
    return []
