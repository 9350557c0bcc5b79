"""Typed readers for environment variables; every error names the variable."""

from __future__ import annotations

import os
import re


class ImproperlyConfigured(ValueError):
    """A setting is missing or malformed; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    """Return the variable's value, or `default` when it is unset or empty."""
    value = os.environ.get(name, "")
    return value if value else default


def env_required(name: str, why: str) -> str:
    """Return the variable's value or fail at start-up naming it and saying why it is needed."""
    value = os.environ.get(name, "")
    if not value:
        raise ImproperlyConfigured(f"{name} must be set: {why}")
    return value


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean written as 1/0, true/false, yes/no or on/off."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """Read an integer, optionally bounded below."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    """Read a number of seconds or any other float, optionally bounded below."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated list, ignoring blanks."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


# Browsers send Origin as scheme://host[:port]: an entry with a path or a trailing slash
# would never match it.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")


def env_origins(name: str) -> list[str]:
    """Read a comma-separated list of allowed Origins (empty: any), each checked."""
    origins = env_list(name, [])
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ImproperlyConfigured(
                f"{name} entries are scheme://host[:port] with no path, got {origin!r}"
            )
    return origins


def env_auth() -> tuple[bool, str | None]:
    """COLLAB_AUTH_REQUIRED and COLLAB_TOKEN_SECRET, read the same way by every service.

    The secret is required when enforcement is on; without it a service must not start.
    """
    required = env_bool("COLLAB_AUTH_REQUIRED", False)
    if required:
        return True, env_required(
            "COLLAB_TOKEN_SECRET", "COLLAB_AUTH_REQUIRED is on and tokens are signed with it"
        )
    return False, env_str("COLLAB_TOKEN_SECRET")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """Read one of a fixed set of words."""
    value = (os.environ.get(name) or default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
