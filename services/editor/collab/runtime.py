"""The process-wide room registry, built from Django settings on first use."""

from __future__ import annotations

import asyncio
import logging

from channels.layers import InMemoryChannelLayer, get_channel_layer
from collab_common.logs import detached

from collab import metrics
from collab.conf import CollabConfig
from collab.monitor import watch_process
from collab.registry import RoomRegistry
from collab.store import AsyncStore, DocumentStore

logger = logging.getLogger(__name__)

_registries: dict[asyncio.AbstractEventLoop, asyncio.Future[RoomRegistry]] = {}
_monitors: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


def start_process_monitoring() -> None:
    """At worker start-up: publish this worker's limits and sample its health from now on.

    The registry starts with the first socket; a pod's gauges must not read zero until then.
    """
    loop = asyncio.get_running_loop()
    metrics.CONNECTION_LIMIT.set(CollabConfig.from_settings().max_connections)
    if loop not in _monitors:
        _monitors[loop] = loop.create_task(
            watch_process(), name="collab-monitor", context=detached()
        )


async def get_registry() -> RoomRegistry:
    """The registry of the running event loop (one per worker process)."""
    loop = asyncio.get_running_loop()
    ready = _registries.get(loop)
    if ready is None:
        ready = loop.create_future()
        _registries[loop] = ready
        try:
            registry = build_registry()
            await registry.start()
        except BaseException as error:
            del _registries[loop]
            ready.set_exception(error)
            ready.exception()  # mark retrieved: the caller gets the error below
            raise
        logger.info("room registry %s started", registry.origin)
        ready.set_result(registry)
    return await asyncio.shield(ready)


def build_registry() -> RoomRegistry:
    """A registry wired to the configured database and channel layer."""
    config = CollabConfig.from_settings()
    store = AsyncStore(DocumentStore(snapshot_history=config.snapshot_history))
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        # No Redis: this process is the only one (gunicorn runs one worker), so there
        # is nobody to tell; publishing to the in-memory layer would only cost time.
        layer = None
    return RoomRegistry(store=store, layer=layer, config=config)


async def shutdown() -> None:
    """Flush the running loop's registry, if one was started, and stop sampling."""
    monitor = _monitors.pop(asyncio.get_running_loop(), None)
    if monitor is not None:
        monitor.cancel()
    ready = _registries.pop(asyncio.get_running_loop(), None)
    if ready is not None and ready.done() and not ready.exception():
        await ready.result().stop()
