"""Every Prometheus metric of the editor, in one place.

Under several gunicorn workers prometheus-client runs in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py): one scrape of any worker reports
the whole pod. Gauges say how they combine across workers. No document or user id is
ever a label.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SIZES = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

CONNECTIONS = Gauge("collab_connections", "Open WebSocket connections", multiprocess_mode="livesum")
CONNECTION_LIMIT = Gauge(
    "collab_connections_limit",
    "Connections the workers accept before refusing with 1013",
    multiprocess_mode="livesum",
)
ROOMS = Gauge("collab_rooms", "Documents loaded in memory", multiprocess_mode="livesum")
FRAMES_RECEIVED = Counter(
    "collab_frames_received_total", "Frames received from clients, by kind", ["kind"]
)
FRAMES_SENT = Counter("collab_frames_sent_total", "Frames written to clients, by kind", ["kind"])
UPDATE_BYTES = Counter(
    "collab_update_bytes_total", "Bytes of document updates accepted from clients and the API"
)
FANOUT_SECONDS = Histogram(
    "collab_fanout_seconds",
    "From receiving an update to queueing it for the last local peer (includes the commit)",
    buckets=_LATENCY,
)
RELAY_SECONDS = Histogram(
    "collab_relay_seconds",
    "From publishing an update on one process to fanning it out on another",
    buckets=_LATENCY,
)
DB_APPEND_SECONDS = Histogram(
    "collab_db_append_seconds", "Duration of one group-commit transaction", buckets=_LATENCY
)
DB_APPEND_BATCH = Histogram(
    "collab_db_append_batch_updates", "Updates written per group-commit transaction", buckets=_BATCH
)
DB_COMPACTION_SECONDS = Histogram(
    "collab_db_compaction_seconds", "Duration of one compaction", buckets=_LATENCY
)
DB_FAILURES = Counter(
    "collab_db_failures_total", "Failed database operations, by operation", ["operation"]
)
PENDING_UPDATES = Gauge(
    "collab_pending_updates",
    "Accepted updates not yet durable (waiting for the database)",
    multiprocess_mode="livesum",
)
ROOM_LOAD_SECONDS = Histogram(
    "collab_room_load_seconds", "Time to load a document into memory", buckets=_LATENCY
)
ROOM_LOAD_BYTES = Histogram(
    "collab_room_load_bytes", "Stored size of documents when loaded", buckets=_SIZES
)
PUBLISH_FAILURES = Counter(
    "collab_publish_failures_total",
    "Channel-layer operations that failed, by operation",
    ["operation"],
)
ROOM_REBUILDS = Counter(
    "collab_room_rebuilds_total",
    "Documents reloaded from the store because a refused update left part of itself in memory",
)
HEAL_EVENTS = Counter(
    "collab_heal_events_total",
    "Rooms found behind the log by the heal loop and caught up (a fan-out message was lost)",
)
REFUSED_FRAMES = Counter("collab_refused_frames_total", "Frames refused, by reason", ["reason"])
REFUSED_CONNECTIONS = Counter(
    "collab_refused_connections_total",
    "Connections refused or closed by the server, by reason",
    ["reason"],
)
AUTH_FAILURES = Counter("collab_auth_failures_total", "Refused tokens, by status", ["status"])
EVENT_LOOP_LAG = Histogram(
    "collab_event_loop_lag_seconds",
    "How late a periodic timer fires: time the event loop was busy elsewhere",
    buckets=_LATENCY,
)
RESIDENT_MEMORY = Gauge(
    "collab_process_resident_memory_bytes",
    "Resident memory of the worker processes",
    multiprocess_mode="livesum",
)
CPU_SECONDS = Counter(
    "collab_process_cpu_seconds_total", "CPU time (user and system) used by the worker processes"
)


# Series that must exist before anything happens: rate() misses the first failure after
# a restart otherwise, and dashboards would show "No data" instead of zero.
for _operation in ("append", "load", "heal", "compact"):
    DB_FAILURES.labels(_operation)
for _operation in ("publish", "subscribe", "unsubscribe", "receive", "dropped"):
    PUBLISH_FAILURES.labels(_operation)
for _status in ("401", "403"):
    AUTH_FAILURES.labels(_status)
for _reason in (
    "bad_frame",
    "bad_update",
    "too_large",
    "read_only",
    "slow_consumer",
    "rate_limited",
    "waiting_update",  # dropped, the connection kept: see collab.session
):
    REFUSED_FRAMES.labels(_reason)
# handshake_timeout: dropped by the server before any request (config/worker.py).
for _reason in (
    "invalid_document",
    "unauthenticated",
    "forbidden",
    "unavailable",
    "handshake_timeout",
):
    REFUSED_CONNECTIONS.labels(_reason)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every worker's metrics, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
