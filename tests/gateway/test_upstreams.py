"""UpstreamPool against real (tiny) HTTP servers answering /readyz."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from gateway import hashing
from gateway.config import GatewayConfig
from gateway.upstreams import UpstreamPool

KEYS = [f"doc-{i}" for i in range(200)]


class ReadyServer:
    """An HTTP/1.1 server on a free loopback port; `/readyz` answers with `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ReadyServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            self.requests.append(f"{method} {target}")
            status = self.status if target == "/readyz" else 404
            body = b"ok\n" if status == 200 else b"no\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "X")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\n"
                f"Content-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def servers() -> AsyncIterator[list[ReadyServer]]:
    started: list[ReadyServer] = []
    yield started
    for server in started:
        await server.stop()


@pytest.fixture
async def pools() -> AsyncIterator[list[UpstreamPool]]:
    created: list[UpstreamPool] = []
    yield created
    for pool in created:
        await pool.stop()


async def _start(servers: list[ReadyServer], status: int = 200) -> ReadyServer:
    server = await ReadyServer(status).start()
    servers.append(server)
    return server


def _pool(pools: list[UpstreamPool], **settings: Any) -> UpstreamPool:
    config = GatewayConfig(health_interval_seconds=0.05, health_timeout_seconds=1.0, **settings)
    pool = UpstreamPool(config)
    pools.append(pool)
    return pool


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- health checks ---------------------------------------------------------------------


async def test_check_all_marks_passing_upstreams_healthy_and_failing_ones_not(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    up = await _start(servers, 200)
    down = await _start(servers, 503)
    pool = _pool(pools, upstreams=(up.url, down.url))

    await pool.check_all()

    assert pool.healthy == {up.url}
    assert "GET /readyz" in up.requests
    assert "GET /readyz" in down.requests


async def test_unreachable_upstream_is_unhealthy(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    up = await _start(servers, 200)
    dead = f"http://127.0.0.1:{_closed_port()}"
    pool = _pool(pools, upstreams=(up.url, dead))

    await pool.check_all()

    assert pool.healthy == {up.url}


async def test_pool_is_not_ready_while_nothing_is_healthy(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    down = await _start(servers, 503)
    pool = _pool(pools, upstreams=(down.url,))

    await pool.check_all()

    assert pool.healthy == set()
    assert pool.choose("doc-1") == []


async def test_check_all_follows_upstreams_going_down_and_coming_back(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    server = await _start(servers, 200)
    pool = _pool(pools, upstreams=(server.url,))
    await pool.check_all()
    assert pool.healthy == {server.url}

    server.status = 503
    await pool.check_all()
    assert pool.healthy == set()

    server.status = 200
    await pool.check_all()
    assert pool.healthy == {server.url}


async def test_started_pool_keeps_checking_in_the_background(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    server = await _start(servers, 200)
    pool = _pool(pools, upstreams=(server.url,))
    await pool.start()
    assert pool.healthy == {server.url}

    server.status = 503
    await _eventually(lambda: server.url not in pool.healthy)

    server.status = 200
    await _eventually(lambda: server.url in pool.healthy)


# --- choosing --------------------------------------------------------------------------


async def test_choose_returns_only_healthy_upstreams_affine_first(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    a = await _start(servers, 200)
    b = await _start(servers, 200)
    c = await _start(servers, 503)
    pool = _pool(pools, upstreams=(a.url, b.url, c.url))
    await pool.check_all()

    for key in KEYS:
        chosen = pool.choose(key)
        assert sorted(chosen) == sorted([a.url, b.url])
        assert chosen[0] == hashing.choose(key, [a.url, b.url])


async def test_choose_spreads_keys_over_healthy_upstreams(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    a = await _start(servers, 200)
    b = await _start(servers, 200)
    pool = _pool(pools, upstreams=(a.url, b.url))
    await pool.check_all()

    firsts = {pool.choose(key)[0] for key in KEYS}

    assert firsts == {a.url, b.url}


async def test_suspect_removes_an_upstream_until_its_next_passing_check(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    a = await _start(servers, 200)
    b = await _start(servers, 200)
    pool = _pool(pools, upstreams=(a.url, b.url))
    await pool.check_all()

    pool.suspect(a.url)

    assert pool.healthy == {b.url}
    assert all(pool.choose(key) == [b.url] for key in KEYS)

    await pool.check_all()

    assert pool.healthy == {a.url, b.url}
    assert {pool.choose(key)[0] for key in KEYS} == {a.url, b.url}


async def test_suspect_of_an_unknown_or_unhealthy_upstream_changes_nothing(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    a = await _start(servers, 200)
    pool = _pool(pools, upstreams=(a.url,))
    await pool.check_all()

    pool.suspect("http://127.0.0.1:1")
    pool.suspect(a.url)
    pool.suspect(a.url)

    assert pool.healthy == set()


# --- DNS -------------------------------------------------------------------------------


async def test_dns_mode_resolves_host_and_port_to_upstream_urls(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    server = await _start(servers, 200)
    pool = _pool(pools, upstreams=(), upstream_dns=f"localhost:{server.port}")
    assert pool.known == ()

    await pool.resolve()

    expected = {f"http://127.0.0.1:{server.port}", f"http://[::1]:{server.port}"}
    assert pool.known
    assert set(pool.known) <= expected
    assert len(set(pool.known)) == len(pool.known)


async def test_dns_mode_start_resolves_then_checks_health(
    servers: list[ReadyServer], pools: list[UpstreamPool]
) -> None:
    server = await _start(servers, 200)
    pool = _pool(
        pools, upstreams=(), upstream_dns=f"localhost:{server.port}", dns_interval_seconds=0.1
    )

    await pool.start()

    assert server.url in pool.known
    assert server.url in pool.healthy
    assert pool.choose("doc-1")[0] in pool.healthy


async def test_dns_name_that_does_not_resolve_keeps_the_known_list(
    pools: list[UpstreamPool],
) -> None:
    pool = _pool(pools, upstreams=(), upstream_dns="no-such-host.invalid:8001")

    await pool.resolve()

    assert pool.known == ()
