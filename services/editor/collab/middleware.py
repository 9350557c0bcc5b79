"""Probes and metrics answered before host validation.

Kubelets and Prometheus address pods by IP, which is not (and should not be) an allowed
host; these three endpoints reveal nothing and must answer them anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

from collab import health

_PROBES: dict[str, Callable[[HttpRequest], Awaitable[HttpResponse]]] = {
    "/healthz": health.healthz,
    "/readyz": health.readyz,
    "/metrics": health.metrics_view,
}


@sync_and_async_middleware
def probes_first(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Serve the probe paths directly; everything else goes down the middleware stack."""
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            probe = _probe(request)
            if probe is not None:
                return await probe(request)
            return cast(HttpResponse, await get_response(request))

        return markcoroutinefunction(middleware)

    def sync_middleware(request: HttpRequest) -> HttpResponse:
        probe = _probe(request)
        if probe is not None:
            return async_to_sync(probe)(request)
        return cast(HttpResponse, get_response(request))

    return sync_middleware


def _probe(request: HttpRequest) -> Callable[[HttpRequest], Awaitable[HttpResponse]] | None:
    if request.method not in ("GET", "HEAD"):
        return None
    return _PROBES.get(request.path)
