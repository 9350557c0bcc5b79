"""Keep access tokens out of every log line, whichever library writes it.

Servers log request paths with their query strings (uvicorn logs every WebSocket
handshake that way), and clients may send `?token=` (or an encoded spelling of it). The
filter rewrites such records, and anything shaped like a JWT, before any handler
formats them.
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"(token=|bearer\s+|collab_token=)[^&\s\"';,]+", re.IGNORECASE)
# Whatever carries it (`?tok%65n=` decodes to `token`), a JWT looks like one: three
# base64url parts, the first an encoded JSON object ("eyJ" is `{"`).
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")
# Loggers that write request lines: servers' own loggers plus the root.
SERVER_LOGGERS = (
    "",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn.error",
    "gunicorn.access",
)


def redact(text: str) -> str:
    """Replace token values in `text` with a marker."""
    return _JWT.sub("[redacted]", _TOKEN.sub(r"\1[redacted]", text))


class RedactTokens(logging.Filter):
    """A logging filter that formats the record once and removes token values from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install(*logger_names: str) -> None:
    """Attach the filter to the named loggers and to every handler of the root logger.

    Logger filters only see records logged on that very logger; records propagating
    from other loggers (httpx logs each proxied URL) are caught at the root's handlers.
    """
    names = logger_names or SERVER_LOGGERS
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in names]
    targets.extend(logging.getLogger().handlers)
    for target in targets:
        if not any(isinstance(existing, RedactTokens) for existing in target.filters):
            target.addFilter(RedactTokens())
