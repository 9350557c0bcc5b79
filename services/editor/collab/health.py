"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from redis import asyncio as aioredis

from collab import metrics

logger = logging.getLogger(__name__)


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and its event loop answers."""
    return JsonResponse({"status": "ok"})


def _ping_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _ping_redis(url: str) -> None:
    client = aioredis.from_url(url)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def readyz(request: HttpRequest) -> JsonResponse:
    """The database and (when configured) Redis answer within the readiness timeout."""
    timeout = settings.COLLAB_READY_TIMEOUT_SECONDS
    checks = {"database": database_sync_to_async(_ping_database)()}
    if settings.REDIS_URL:
        checks["redis"] = _ping_redis(settings.REDIS_URL)
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, timeout)
            results[name] = "ok"
        except Exception as error:  # includes the timeout
            logger.warning("readiness check %s failed: %s", name, type(error).__name__)
            results[name] = "unavailable"
    ready = all(result == "ok" for result in results.values())
    return JsonResponse({"ready": ready, "checks": results}, status=200 if ready else 503)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of every worker of this pod (scraped per pod, not via the gateway)."""
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)
