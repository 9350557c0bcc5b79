"""The gateway's Prometheus metrics (one process: the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge(
    "collab_gateway_open_connections", "Open client WebSocket connections by upstream", ["upstream"]
)
CONNECTIONS_TOTAL = Counter(
    "collab_gateway_connections_total", "Client WebSocket connections relayed to an upstream"
)
REFUSALS = Counter(
    "collab_gateway_refusals_total",
    "Connections or frames refused by the gateway, by reason",
    ["reason"],
)
AUTH_FAILURES = Counter(
    "collab_gateway_auth_failures_total", "Refused tokens, by status", ["status"]
)
UPSTREAM_HEALTHY = Gauge(
    "collab_gateway_upstream_healthy",
    "1 when the upstream passes its readiness check",
    ["upstream"],
)
DIAL_SECONDS = Histogram(
    "collab_gateway_dial_seconds",
    "Time to open the upstream WebSocket",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FRAMES = Counter("collab_gateway_frames_total", "Frames relayed, by direction", ["direction"])
BYTES = Counter("collab_gateway_bytes_total", "Frame bytes relayed, by direction", ["direction"])
UPSTREAM_CLOSES = Counter(
    "collab_gateway_upstream_failures_total",
    "Sessions ended because their upstream failed or could not be dialled",
)
HTTP_REQUESTS = Counter(
    "collab_gateway_http_requests_total", "Proxied HTTP requests by status class", ["status"]
)
DRAINING = Gauge("collab_gateway_draining", "1 while the gateway drains before exiting")
