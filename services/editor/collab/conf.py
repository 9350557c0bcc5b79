"""The collaboration core's settings as one typed object, read once from Django settings."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True, slots=True)
class CollabConfig:
    """Limits and tuning knobs; see the README's configuration table."""

    channel_prefix: str = "collab"
    max_frame_bytes: int = 2 * 1024 * 1024
    max_awareness_bytes: int = 64 * 1024
    max_document_bytes: int = 64 * 1024 * 1024
    send_queue_bytes: int = 8 * 1024 * 1024
    rate_per_second: float = 200.0
    rate_burst: int = 400
    max_connections: int = 5000
    max_pending_updates: int = 50_000
    compact_after_updates: int = 500
    snapshot_history: int = 10
    heal_interval_seconds: float = 1.0
    auth_required: bool = False
    token_secret: str | None = None

    @classmethod
    def from_settings(cls) -> CollabConfig:
        """Build the config from the COLLAB_* Django settings."""
        return cls(
            channel_prefix=settings.COLLAB_CHANNEL_PREFIX,
            max_frame_bytes=settings.COLLAB_MAX_FRAME_BYTES,
            max_document_bytes=settings.COLLAB_MAX_DOCUMENT_BYTES,
            send_queue_bytes=settings.COLLAB_SEND_QUEUE_BYTES,
            rate_per_second=settings.COLLAB_RATE_PER_SECOND,
            rate_burst=settings.COLLAB_RATE_BURST,
            max_connections=settings.COLLAB_MAX_CONNECTIONS_PER_WORKER,
            max_pending_updates=settings.COLLAB_MAX_PENDING_UPDATES,
            compact_after_updates=settings.COLLAB_COMPACT_AFTER_UPDATES,
            snapshot_history=settings.COLLAB_SNAPSHOT_HISTORY,
            heal_interval_seconds=settings.COLLAB_HEAL_INTERVAL_SECONDS,
            auth_required=settings.COLLAB_AUTH_REQUIRED,
            token_secret=settings.COLLAB_TOKEN_SECRET,
        )
