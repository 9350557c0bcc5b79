"""gunicorn settings for the editor, all from the environment (see the README)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

host = os.environ.get("EDITOR_HOST") or "127.0.0.1"
port = os.environ.get("EDITOR_PORT") or "8001"
bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]

_requested = os.environ.get("EDITOR_WORKERS") or ""
if os.environ.get("REDIS_URL"):
    workers = int(_requested or 2)
else:
    # Without Redis the channel layer lives in one process's memory: a second worker
    # would hold a second, diverging copy of every room.
    if _requested not in ("", "1"):
        sys.exit("EDITOR_WORKERS > 1 needs REDIS_URL (workers share rooms through Redis)")
    workers = 1

worker_class = "config.worker.EditorWorker"
# Seconds a worker gets on SIGTERM to close sockets with 1012 and flush pending updates.
graceful_timeout = int(os.environ.get("EDITOR_GRACEFUL_TIMEOUT") or 20)
timeout = 60
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = (os.environ.get("COLLAB_LOG_LEVEL") or "info").lower()

# Metrics of every worker go to files in one folder so that any worker's /metrics
# reports the whole pod (prometheus-client's multiprocess mode). Workers inherit it.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
    tempfile.gettempdir(), f"collab-editor-metrics-{port}"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

if (os.environ.get("COLLAB_LOG_FORMAT") or "plain").lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "collab_common.logs.JsonFormatter"}},
        "filters": {"redact": {"()": "collab_common.redaction.RedactTokens"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"gunicorn.error": {"handlers": ["console"], "level": loglevel.upper()}},
    }


def on_starting(server: Any) -> None:
    """Start from an empty metrics folder: files of a previous run would be summed in."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def on_exit(server: Any) -> None:
    """Remove the metrics folder with the pod's last process."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (connections, rooms) from the pod's totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
