"""Log lines that say which connection and document they are about, as text or JSON.

Connection and document ids travel in context variables set by the socket edge, so
every line logged while handling that socket carries them. Shared background tasks
must start from a `detached()` context, or they would carry the ids of whichever
socket happened to create them.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Literal

from collab_common import redaction

conn_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("collab_conn_id", default="-")
doc_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("collab_doc_id", default="-")

LogFormat = Literal["plain", "json"]
PLAIN_FORMAT = (
    "%(asctime)s %(levelname)s [%(process)d] %(name)s conn=%(conn_id)s doc=%(doc_id)s: %(message)s"
)


def detached() -> contextvars.Context:
    """An empty context for tasks that serve every connection (writers, loops)."""
    return contextvars.Context()


class ContextFilter(logging.Filter):
    """Adds `conn_id` and `doc_id` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.conn_id = conn_id_var.get()
        record.doc_id = doc_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, connection, document."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "conn_id": getattr(record, "conn_id", conn_id_var.get()),
            "doc_id": getattr(record, "doc_id", doc_id_var.get()),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def keep_above_debug(*names: str) -> None:
    """Keep these loggers at INFO at least, whatever COLLAB_LOG_LEVEL says.

    The WebSocket libraries log every handshake header (session cookies) and the first
    and last bytes of every frame (document content) at DEBUG. uvicorn's protocols read
    the level when a connection opens, so this must run before the server starts.
    """
    for name in names:
        quiet = logging.getLogger(name)
        quiet.setLevel(max(logging.INFO, quiet.getEffectiveLevel()))


def formatter(kind: LogFormat) -> logging.Formatter:
    """The formatter for COLLAB_LOG_FORMAT."""
    return JsonFormatter() if kind == "json" else logging.Formatter(PLAIN_FORMAT)


def configure(kind: LogFormat, level: str = "INFO") -> None:
    """Root logging for a plain Python process (the gateway): context, redaction, format."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    redaction.install()
