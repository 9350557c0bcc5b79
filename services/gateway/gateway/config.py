"""The gateway's settings, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from collab_common.env import (
    ImproperlyConfigured,
    env_auth,
    env_float,
    env_int,
    env_list,
    env_origins,
    env_str,
)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Every gateway setting; see the README's gateway table."""

    host: str = "127.0.0.1"
    port: int = 8000
    upstreams: tuple[str, ...] = ()
    upstream_dns: str | None = None
    upstream_scheme: str = "http"
    dns_interval_seconds: float = 5.0
    health_interval_seconds: float = 1.0
    health_timeout_seconds: float = 1.0
    dial_timeout_seconds: float = 5.0
    auth_required: bool = False
    token_secret: str | None = None
    max_frame_bytes: int = 2 * 1024 * 1024
    rate_per_second: float = 200.0
    rate_burst: int = 400
    max_connections_per_ip: int = 200
    allowed_origins: tuple[str, ...] = ()
    handshake_timeout_seconds: float = 10.0
    send_timeout_seconds: float = 5.0
    drain_seconds: float = 10.0
    forwarded_allow_ips: str = "127.0.0.1"

    @classmethod
    def from_env(cls) -> GatewayConfig:
        """Read GATEWAY_* and the shared COLLAB_AUTH_REQUIRED / COLLAB_TOKEN_SECRET."""
        auth_required, secret = env_auth()
        upstreams = tuple(url.rstrip("/") for url in env_list("GATEWAY_UPSTREAMS", []))
        upstream_dns = env_str("GATEWAY_UPSTREAM_DNS")
        if not upstreams and not upstream_dns:
            upstreams = ("http://127.0.0.1:8001",)
        if upstreams and upstream_dns:
            raise ImproperlyConfigured(
                "set either GATEWAY_UPSTREAMS or GATEWAY_UPSTREAM_DNS, not both"
            )
        if upstream_dns and ":" not in upstream_dns:
            raise ImproperlyConfigured("GATEWAY_UPSTREAM_DNS must be host:port")
        for url in upstreams:
            if not url.startswith(("http://", "https://")):
                raise ImproperlyConfigured(
                    f"GATEWAY_UPSTREAMS entries must be http(s) URLs: {url!r}"
                )
        allowed_origins = tuple(env_origins("GATEWAY_ALLOWED_ORIGINS"))
        return cls(
            host=env_str("GATEWAY_HOST", "127.0.0.1") or "127.0.0.1",
            port=env_int("GATEWAY_PORT", 8000, minimum=1),
            upstreams=upstreams,
            upstream_dns=upstream_dns,
            dns_interval_seconds=env_float("GATEWAY_DNS_INTERVAL_SECONDS", 5.0, minimum=0.1),
            health_interval_seconds=env_float("GATEWAY_HEALTH_INTERVAL_SECONDS", 1.0, minimum=0.05),
            health_timeout_seconds=env_float("GATEWAY_HEALTH_TIMEOUT_SECONDS", 1.0, minimum=0.05),
            dial_timeout_seconds=env_float("GATEWAY_DIAL_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            auth_required=auth_required,
            token_secret=secret,
            max_frame_bytes=env_int("GATEWAY_MAX_FRAME_BYTES", 2 * 1024 * 1024, minimum=1024),
            rate_per_second=env_float("GATEWAY_RATE_PER_SECOND", 200.0, minimum=0.1),
            rate_burst=env_int("GATEWAY_RATE_BURST", 400, minimum=1),
            max_connections_per_ip=env_int("GATEWAY_MAX_CONNECTIONS_PER_IP", 200, minimum=1),
            allowed_origins=allowed_origins,
            handshake_timeout_seconds=env_float(
                "GATEWAY_HANDSHAKE_TIMEOUT_SECONDS", 10.0, minimum=0.1
            ),
            drain_seconds=env_float("GATEWAY_DRAIN_SECONDS", 10.0, minimum=0.0),
            send_timeout_seconds=env_float("GATEWAY_SEND_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            forwarded_allow_ips=env_str("GATEWAY_FORWARDED_ALLOW_IPS", "127.0.0.1") or "127.0.0.1",
        )
