"""The editor endpoints the gateway can use: from a list or DNS, health-checked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import httpx

from gateway import hashing, metrics
from gateway.config import GatewayConfig

logger = logging.getLogger(__name__)


class UpstreamPool:
    """Known upstreams and which of them pass `/readyz`; picks one per document."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.known: tuple[str, ...] = config.upstreams
        self.healthy: set[str] = set()
        self._client = httpx.AsyncClient(timeout=config.health_timeout_seconds)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Resolve (when using DNS), check every upstream once, then keep checking."""
        if self.config.upstream_dns:
            await self.resolve()
            self._tasks.append(asyncio.create_task(self._resolve_forever()))
        await self.check_all()
        self._tasks.append(asyncio.create_task(self._check_forever()))

    async def stop(self) -> None:
        """Stop the background checks."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    def choose(self, key: str) -> list[str]:
        """Healthy upstreams for `key`, the affine one first (empty when none is healthy)."""
        candidates = [url for url in self.known if url in self.healthy]
        return hashing.rank(key, candidates)

    def suspect(self, url: str) -> None:
        """An upstream just failed a session: stop sending it new ones until it passes again."""
        if url in self.healthy:
            logger.warning("upstream %s failed a session; marked unhealthy", url)
            self._set_health(url, False)

    async def check_all(self) -> None:
        """Probe every known upstream's readiness once."""
        results = await asyncio.gather(*(self._probe(url) for url in self.known))
        for url, ok in zip(self.known, results, strict=True):
            self._set_health(url, ok)

    async def _probe(self, url: str) -> bool:
        try:
            response = await self._client.get(f"{url}/readyz")
        except httpx.HTTPError:
            return False
        except Exception:
            # Whatever fails, it is this probe: the upstream counts as down, and the
            # loop that probes every upstream must go on.
            logger.exception("probing %s failed", url)
            return False
        return response.status_code == 200

    def _set_health(self, url: str, ok: bool) -> None:
        was = url in self.healthy
        if ok and not was:
            self.healthy.add(url)
            logger.info("upstream %s is healthy", url)
        elif not ok and was:
            self.healthy.discard(url)
            logger.warning("upstream %s is unhealthy", url)
        metrics.UPSTREAM_HEALTHY.labels(url).set(1 if ok else 0)

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_seconds)
            try:
                await self.check_all()
            except Exception:
                # A dead loop would leave every upstream's health frozen for good.
                logger.exception("health check round failed")

    async def resolve(self) -> None:
        """Re-read the upstream addresses from DNS (a Kubernetes headless service)."""
        assert self.config.upstream_dns is not None
        host, _, port = self.config.upstream_dns.rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, int(port), type=socket.SOCK_STREAM
            )
        except OSError as error:
            logger.warning("cannot resolve %s: %s", self.config.upstream_dns, error)
            return
        addresses = sorted({str(info[4][0]) for info in infos})
        scheme = self.config.upstream_scheme
        known = tuple(
            f"{scheme}://[{address}]:{port}" if ":" in address else f"{scheme}://{address}:{port}"
            for address in addresses
        )
        if known != self.known:
            logger.info("upstreams from DNS: %s", ", ".join(known) or "none")
            for gone in set(self.known) - set(known):
                self.healthy.discard(gone)
                with contextlib.suppress(KeyError):
                    metrics.UPSTREAM_HEALTHY.remove(gone)
            self.known = known

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.dns_interval_seconds)
            await self.resolve()
