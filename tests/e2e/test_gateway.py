"""The gateway in front of real editor processes: affinity, failover, limits, backpressure,
drain and HTTP, over real sockets only."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection

from tests.support.processes import (
    EditorInstance,
    GatewayInstance,
    PostgresDatabase,
    RedisServer,
)
from tests.support.rawws import never_reading_websocket, upgrade_request
from tests.support.yclient import YClient, wait_until

GOOD_ORIGIN = "https://good.example"


# Helpers ------------------------------------------------------------------------------


def start_editors(
    editors: list[EditorInstance],
    pg: PostgresDatabase,
    redis: RedisServer,
    count: int = 2,
    extra_env: dict[str, str] | None = None,
) -> list[EditorInstance]:
    started = []
    for index in range(count):
        instance = EditorInstance(
            f"gw-editor-{index}", database_url=pg.url, redis_url=redis.url, extra_env=extra_env
        )
        editors.append(instance)
        started.append(instance.start())
    return started


def start_gateway(
    gateways: list[GatewayInstance], upstreams: list[EditorInstance], **env: str
) -> GatewayInstance:
    gateway = GatewayInstance(
        "gateway", upstreams=[editor.base_url for editor in upstreams], extra_env=env
    )
    gateways.append(gateway)
    return gateway.start()


def tokens(text: str) -> list[str]:
    return [token for token in text.split(";") if token]


async def http(method: str, url: str, body: bytes | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.request(method, url, content=body)


async def metric(base_url: str, name: str) -> dict[str, float]:
    """Samples of one metric from `base_url`/metrics, keyed by their first label value."""
    response = await http("GET", f"{base_url}/metrics")
    assert response.status_code == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                samples[next(iter(sample.labels.values()), "")] = sample.value
    return samples


async def open_connections(gateway: GatewayInstance) -> float:
    """Client sockets the gateway is relaying right now."""
    return sum((await metric(gateway.base_url, "collab_gateway_open_connections")).values())


async def editor_connections(editor: EditorInstance) -> float:
    """WebSocket connections the editor holds (all workers)."""
    return sum((await metric(editor.base_url, "collab_connections")).values())


async def settle(
    probe: Callable[[], Awaitable[float]], expected: float, *, timeout: float
) -> float:
    """Poll the async `probe` until it returns `expected`; return its last value."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = await probe()
    return value


async def close_of(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    frames: tuple[bytes, ...] = (),
    timeout: float = 5,
) -> tuple[int | None, str]:
    """Open a WebSocket, send `frames`, read until the server closes; the code and reason."""
    async with asyncio.timeout(timeout):
        ws = await websockets.connect(
            url, additional_headers=headers, compression=None, max_size=None
        )
        try:
            for frame in frames:
                await ws.send(frame)
            while True:
                await ws.recv()
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or ""


async def flood(writer: YClient, *, rounds: int, chunk: int) -> None:
    """Push `rounds` updates of about `chunk` bytes each (deleted again: the text stays small)."""
    for n in range(rounds):
        writer.insert(f"{n:06d}" + "x" * (chunk - 6))
        del writer.text[0 : len(writer.text)]
        await writer.flushed()
        await asyncio.sleep(0.005)


# Affinity ------------------------------------------------------------------------------


async def test_clients_of_a_document_share_an_editor_and_documents_spread_over_both(
    editors, gateways, pg_database, redis_server
):
    pair = start_editors(editors, pg_database, redis_server)
    gateway = start_gateway(gateways, pair)
    bases = {editor.base_url for editor in pair}

    same = [await YClient(f"{gateway.ws_url}/one-doc").connect() for _ in range(6)]
    assert len({client.upstream for client in same}) == 1
    assert same[0].upstream in bases
    same[0].insert("hello;")
    await wait_until(lambda: all(str(c.text) == "hello;" for c in same), what="relay among six")

    spread = await asyncio.gather(
        *(YClient(f"{gateway.ws_url}/spread-{index}").connect() for index in range(40))
    )
    per_upstream = collections.Counter(client.upstream for client in spread)
    assert set(per_upstream) == bases, per_upstream
    assert min(per_upstream.values()) >= 8, per_upstream

    again = await YClient(f"{gateway.ws_url}/spread-7").connect()
    assert again.upstream == spread[7].upstream  # the choice is stable
    for client in (*same, *spread, again):
        await client.close()


# Editor death -------------------------------------------------------------------------


async def test_clients_of_a_killed_editor_fail_over_through_the_gateway_and_converge(
    editors, gateways, pg_database, redis_server
):
    pair = start_editors(editors, pg_database, redis_server)
    gateway = start_gateway(gateways, pair)
    clients = [await YClient(f"{gateway.ws_url}/failover").connect() for _ in range(4)]
    assert len({client.upstream for client in clients}) == 1
    victim = next(e for e in pair if e.base_url == clients[0].upstream)
    survivor = next(e for e in pair if e is not victim)

    expected: list[str] = []

    def edit(rounds: range) -> None:
        for n in rounds:
            for index, client in enumerate(clients):
                client.insert(f"c{index}-{n};")
                expected.append(f"c{index}-{n}")

    def converged() -> bool:
        texts = {str(client.text) for client in clients}
        return len(texts) == 1 and len(tokens(texts.pop())) == len(expected)

    edit(range(5))
    await wait_until(converged, what="convergence before the kill")

    victim.kill()
    await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for c in clients)), timeout=5)
    codes = [(client.close_code, client.close_reason) for client in clients]
    assert all(code in (1012, 1013) for code, _ in codes), codes

    edit(range(5, 8))  # made while disconnected
    for client in clients:
        await client.reconnect()
    assert {client.upstream for client in clients} == {survivor.base_url}
    edit(range(8, 10))

    await wait_until(converged, what="convergence on the surviving editor")
    assert sorted(tokens(str(clients[0].text))) == sorted(expected)  # every insert, once

    fresh = await YClient(f"{gateway.ws_url}/failover").connect()
    assert fresh.upstream == survivor.base_url
    assert str(fresh.text) == str(clients[0].text)
    for client in (*clients, fresh):
        await client.close()


# Limits -------------------------------------------------------------------------------


async def test_limits_refuse_with_their_codes_and_are_counted_by_reason(
    editors, gateways, pg_database, redis_server
):
    (editor,) = start_editors(editors, pg_database, redis_server, count=1)
    gateway = start_gateway(
        gateways,
        [editor],
        GATEWAY_MAX_FRAME_BYTES="4096",
        GATEWAY_RATE_PER_SECOND="5",
        GATEWAY_RATE_BURST="10",
        GATEWAY_MAX_CONNECTIONS_PER_IP="3",
        GATEWAY_ALLOWED_ORIGINS=GOOD_ORIGIN,
        GATEWAY_HANDSHAKE_TIMEOUT_SECONDS="1",
    )
    good = {"Origin": GOOD_ORIGIN}
    url = f"{gateway.ws_url}/limits"

    # Connections per address: the fourth is refused, the first three keep working.
    three = [await YClient(url).connect(headers=good) for _ in range(3)]
    assert await close_of(url, headers=good) == (4429, "too many connections from your address")
    three[0].insert("still;")
    await wait_until(
        lambda: all(str(client.text) == "still;" for client in three[1:]),
        what="the three admitted clients to keep working",
    )
    assert not any(client.closed.is_set() for client in three)
    for client in three:
        await client.close()
    assert await settle(lambda: open_connections(gateway), 0, timeout=5) == 0

    # Origin allowlist.
    evil = {"Origin": "https://evil.example"}
    assert await close_of(url, headers=evil) == (4403, "origin not allowed")
    welcome = await YClient(url).connect(headers=good)
    assert str(welcome.text) == "still;"
    await welcome.close()

    # Frame size: a frame just under the limit passes, one byte over closes with 4413.
    at_limit = await YClient(url).connect(headers=good)
    at_limit.insert("y" * 4000)  # an update frame of a little under 4096 bytes
    await at_limit.flushed()
    code, reason = await close_of(url, headers=good, frames=(b"\x00\x02" + b"\x00" * 4095,))
    assert (code, reason) == (4413, "frame larger than 4096 bytes")
    assert not at_limit.closed.is_set()
    await at_limit.close()

    # Message rate: 30 awareness queries against a burst of 10.
    code, reason = await close_of(url, headers=good, frames=(b"\x03",) * 30)
    assert (code, reason) == (4429, "message rate limit exceeded")

    # Document ids.
    for bad in ("bad%20id", "a" * 129, "x/y", "%2E%2E%2Fx"):
        code, _ = await close_of(f"{gateway.ws_url}/{bad}", headers=good)
        assert code == 4400, bad

    # Handshake deadline: a partial request head and a silent connection are dropped
    # after about a second; clients with complete handshakes are not touched.
    normal = await YClient(url).connect(headers=good)
    peer = await YClient(url).connect(headers=good)
    partial_reader, partial_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    partial_writer.write(b"GET /ws/docs/x HTTP/1.1\r\nHost: a\r\n")
    await partial_writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(partial_reader.read(), timeout=3) == b""
    assert await asyncio.wait_for(silent_reader.read(), timeout=3) == b""
    assert 0.7 < time.monotonic() - started < 3
    for stream in (partial_writer, silent_writer):
        stream.close()
    late = await YClient(url).connect(headers=good)
    normal.insert("after-slowloris;")
    await wait_until(
        lambda: "after-slowloris;" in str(peer.text) and "after-slowloris;" in str(late.text),
        what="clients with complete handshakes to keep working",
    )
    assert not normal.closed.is_set() and not peer.closed.is_set()
    for client in (normal, peer, late):
        await client.close()

    counted = await metric(gateway.base_url, "collab_gateway_refusals_total")
    assert counted.get("per_ip") == 1, counted
    assert counted.get("origin") == 1, counted
    assert counted.get("frame_size") == 1, counted
    assert counted.get("rate") == 1, counted
    assert counted.get("bad_path") == 4, counted
    assert counted.get("handshake_timeout") == 2, counted


async def test_a_document_id_with_a_trailing_newline_is_refused_as_by_the_editor(
    editors, gateways, pg_database, redis_server
):
    """The gateway's id check must be the editor's: `abc%0A` is not the document `abc`."""
    (editor,) = start_editors(editors, pg_database, redis_server, count=1)
    gateway = start_gateway(gateways, [editor])
    direct = await close_of(f"{editor.ws_url}/abc%0A")
    assert direct[0] == 4400, direct

    owner = await YClient(f"{gateway.ws_url}/abc").connect()
    owner.insert("private;")
    await owner.flushed()
    alias = YClient(f"{gateway.ws_url}/abc%0A")
    await alias.connect(wait_synced=False)
    outcomes = [asyncio.create_task(alias.synced.wait()), asyncio.create_task(alias.closed.wait())]
    await asyncio.wait(outcomes, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    for outcome in outcomes:
        outcome.cancel()
    assert alias.close_code == 4400, (
        f"the gateway relayed /ws/docs/abc%0A to document 'abc' (synced: "
        f"{alias.synced.is_set()}, text {str(alias.text)!r}); the editor itself answers {direct}"
    )
    await alias.close()
    await owner.close()


# Close codes --------------------------------------------------------------------------


async def close_while_sending(url: str, first: bytes, *, timeout: float = 5) -> int | None:
    """Send `first`, then keep sending awareness queries until the server closes."""
    async with asyncio.timeout(timeout):
        ws = await websockets.connect(url, compression=None)
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(first)
            while True:
                await ws.send(b"\x03")
                await asyncio.sleep(0)
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await ws.recv()
        return ws.close_code


async def test_an_editor_close_code_reaches_a_client_that_is_still_sending(
    editors, gateways, pg_database, redis_server
):
    """The editor closes with 4400 on a bad frame; frames the client sends meanwhile must
    not turn the relayed close into an abnormal closure (1006)."""
    (editor,) = start_editors(editors, pg_database, redis_server, count=1)
    gateway = start_gateway(
        gateways, [editor], GATEWAY_RATE_PER_SECOND="100000", GATEWAY_RATE_BURST="100000"
    )
    codes = [await close_while_sending(f"{gateway.ws_url}/chatty", b"\xff\xff") for _ in range(20)]
    assert codes == [4400] * 20, collections.Counter(codes)


# Backpressure -------------------------------------------------------------------------


async def test_a_client_that_never_reads_costs_bounded_memory_and_is_dropped(
    editors, gateways, pg_database, redis_server
):
    (editor,) = start_editors(
        editors,
        pg_database,
        redis_server,
        count=1,
        extra_env={"COLLAB_SEND_QUEUE_BYTES": "1048576"},
    )
    gateway = start_gateway(gateways, [editor])
    url = f"{gateway.ws_url}/flood"
    writer = await YClient(url).connect()
    reader = await YClient(url).connect()
    stuck = never_reading_websocket(gateway.port, "/ws/docs/flood")
    try:
        assert await settle(lambda: open_connections(gateway), 3, timeout=5) == 3
        before = peak = gateway.rss_bytes()

        rounds, chunk = 100, 400_000  # 40 MB of updates

        def reader_has(updates: int) -> bool:
            return sum(1 for frame in reader.received_frames if len(frame) >= chunk) >= updates

        for n in range(rounds):
            writer.insert(f"{n:06d}" + "x" * (chunk - 6))
            del writer.text[0 : len(writer.text)]
            await writer.flushed()
            # In step with the reader, which must not become a slow consumer itself.
            await wait_until(functools.partial(reader_has, n + 1), what=f"the reader to get {n}")
            peak = max(peak, gateway.rss_bytes())
        assert peak - before < 30 * 1024 * 1024, f"gateway RSS grew by {peak - before} bytes"
        assert not reader.closed.is_set() and not writer.closed.is_set()

        # The editor gave up on the client that never reads (send queue full, 1013).
        assert await slow_consumers_dropped(editor) == 1
        flooded_at = time.monotonic()
        left = await settle(lambda: open_connections(gateway), 2, timeout=8)
        assert left == 2, (
            f"the gateway still relays {left:.0f} sockets {time.monotonic() - flooded_at:.0f}s "
            "after the flood: the client that never reads is never dropped"
        )
    finally:
        stuck.close()
        await writer.close()
        await reader.close()


async def test_a_client_that_never_reads_is_dropped_when_its_editor_dies(
    editors, gateways, pg_database, redis_server
):
    (editor,) = start_editors(editors, pg_database, redis_server, count=1)
    gateway = start_gateway(gateways, [editor])
    writer = await YClient(f"{gateway.ws_url}/stuck").connect()
    stuck = never_reading_websocket(gateway.port, "/ws/docs/stuck")
    try:
        await flood(writer, rounds=20, chunk=200_000)  # fills the stuck socket's buffers
        assert await settle(lambda: open_connections(gateway), 2, timeout=5) == 2

        editor.kill()
        await asyncio.wait_for(writer.closed.wait(), timeout=5)
        assert writer.close_code == 1013
        left = await settle(lambda: open_connections(gateway), 0, timeout=5)
        assert left == 0, (
            "5s after its editor died, the gateway still relays the socket of the client "
            "that stopped reading"
        )
    finally:
        stuck.close()
        await writer.close()


async def slow_consumers_dropped(editor: EditorInstance) -> float:
    """Connections the editor closed (or tried to) for a full send queue."""
    refused = await metric(editor.base_url, "collab_refused_frames_total")
    return refused.get("slow_consumer", 0)


async def stalled_websocket(url: str, port: int) -> ClientConnection:
    """A WebSocket that reads nothing until the caller calls recv()."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    return await websockets.connect(url, sock=sock, max_queue=1, max_size=None, compression=None)


@pytest.mark.parametrize("through", ["gateway", "editor"])
async def test_a_client_that_stalls_is_either_closed_or_still_served(
    through, editors, gateways, pg_database, redis_server
):
    """A client that stalls long enough to fill its send queue is closed with 1013 (README).
    Once it reads again it must find that close, or still get every update: never silence
    on a socket left open."""
    (editor,) = start_editors(
        editors,
        pg_database,
        redis_server,
        count=1,
        extra_env={"COLLAB_SEND_QUEUE_BYTES": "1048576"},
    )
    server = start_gateway(gateways, [editor]) if through == "gateway" else editor
    url = f"{server.ws_url}/stall"
    writer = await YClient(url).connect()
    slow = await stalled_websocket(url, server.port)
    # Updates small enough that its send queue fills only once its socket buffers are
    # full; up to 20 MB, until the editor gives up on it.
    for n in range(400):
        writer.insert(f"{n:06d}" + "x" * 49_994)
        del writer.text[0 : len(writer.text)]
        await writer.flushed()
        await asyncio.sleep(0.005)
        if n % 10 == 9 and await slow_consumers_dropped(editor):
            break
    if through == "editor":
        assert await slow_consumers_dropped(editor) == 1
    await asyncio.sleep(3)  # the stall itself: the client reads nothing for 3 s
    marker = b"after-the-stall"
    writer.insert(marker.decode())
    await writer.flushed()

    received, served = 0, False
    with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
        while not served:
            frame = await asyncio.wait_for(slow.recv(), timeout=2)
            received += len(frame)
            served = marker in frame
    # The editor owes it a 1013; a gateway that gives up on it first may only cut it off.
    expected = {1013} if through == "editor" else {1013, 1006}
    assert served or slow.close_code in expected, (
        f"the client read {received} bytes, then nothing for 2 s (not the update made after "
        f"its stall), its socket still {slow.state.name}: dropped from the document without "
        "being closed"
    )
    await slow.close()
    await writer.close()


async def test_clients_vanishing_mid_stream_do_not_mark_a_healthy_editor_unhealthy(
    editors, gateways, pg_database, redis_server
):
    (editor,) = start_editors(editors, pg_database, redis_server, count=1)
    # Health checks far apart, so that a wrong verdict stays visible.
    gateway = start_gateway(gateways, [editor], GATEWAY_HEALTH_INTERVAL_SECONDS="30")
    writer = await YClient(f"{gateway.ws_url}/vanish").connect()
    stuck = [never_reading_websocket(gateway.port, "/ws/docs/vanish") for _ in range(16)]
    await flood(writer, rounds=40, chunk=100_000)
    assert await settle(lambda: open_connections(gateway), 17, timeout=5) == 17

    for sock in stuck:  # unread data: the kernel resets these connections
        sock.close()
    assert await settle(lambda: open_connections(gateway), 1, timeout=5) == 1

    failures = await metric(gateway.base_url, "collab_gateway_upstream_failures_total")
    healthy = await metric(gateway.base_url, "collab_gateway_upstream_healthy")
    ready = await http("GET", f"{gateway.base_url}/readyz")
    assert (failures.get(""), healthy.get(editor.base_url), ready.status_code) == (0, 1, 200), (
        f"clients that went away made the gateway suspect its editor: failures={failures}, "
        f"healthy={healthy}, readyz={ready.status_code} {ready.text}"
    )
    newcomer = await YClient(f"{gateway.ws_url}/vanish").connect()
    await newcomer.close()
    await writer.close()


async def test_a_client_gone_before_the_editor_answers_leaves_no_connection_on_the_editor(
    editors, gateways, pg_database, redis_server
):
    (editor,) = start_editors(editors, pg_database, redis_server, count=1)
    gateway = start_gateway(gateways, [editor])
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(upgrade_request(gateway.port, "/ws/docs/impatient"))
    # A real client, so that something did reach the editor and the gauge is exported.
    probe = await YClient(f"{gateway.ws_url}/impatient").connect()
    await probe.close()

    assert await settle(lambda: open_connections(gateway), 0, timeout=5) == 0
    held = await settle(lambda: editor_connections(editor), 0, timeout=3)
    assert held == 0, (
        f"the editor still holds {held:.0f} connections the gateway opened for clients that "
        "had already gone"
    )


# Drain --------------------------------------------------------------------------------


async def test_sigterm_fails_readiness_refuses_new_sockets_and_closes_old_ones_after_the_drain(
    editors, gateways, pg_database, redis_server
):
    (editor,) = start_editors(editors, pg_database, redis_server, count=1)
    gateway = start_gateway(gateways, [editor], GATEWAY_DRAIN_SECONDS="2")
    client = await YClient(f"{gateway.ws_url}/drain").connect()

    terminated = time.monotonic()
    gateway.terminate()

    async def readiness() -> float:
        return (await http("GET", f"{gateway.base_url}/readyz")).status_code

    assert await settle(readiness, 503, timeout=1) == 503
    ready = await http("GET", f"{gateway.base_url}/readyz")
    assert ready.json()["draining"] is True
    assert (await http("GET", f"{gateway.base_url}/healthz")).status_code == 200

    assert await close_of(f"{gateway.ws_url}/drain") == (1012, "gateway restarting; reconnect")
    client.insert("during the drain;")  # the old socket still works
    await client.flushed()
    assert not client.closed.is_set()

    await asyncio.wait_for(client.closed.wait(), timeout=5)
    waited = time.monotonic() - terminated
    assert client.close_code == 1012
    assert 1.5 < waited < 4, waited
    assert await asyncio.to_thread(gateway.wait, 10) == 0
    await client.close()


# HTTP ---------------------------------------------------------------------------------


async def test_http_is_proxied_and_without_editors_the_gateway_answers_503_and_1013(
    editors, gateways, pg_database, redis_server
):
    pair = start_editors(editors, pg_database, redis_server)
    gateway = start_gateway(gateways, pair, GATEWAY_MAX_FRAME_BYTES="65536")
    listener = await YClient(f"{gateway.ws_url}/via-gateway").connect()

    backend: Doc[Any] = Doc()
    backend.get("text", type=Text).insert(0, "posted through the gateway")
    response = await http(
        "POST", f"{gateway.base_url}/api/docs/via-gateway/updates", backend.get_update()
    )
    assert response.status_code == 200, response.text
    assert response.json()["changed"] is True
    await wait_until(
        lambda: str(listener.text) == "posted through the gateway", what="posted update relayed"
    )

    response = await http("GET", f"{gateway.base_url}/api/docs")
    assert response.status_code == 200
    assert "via-gateway" in {doc["id"] for doc in response.json()["documents"]}
    response = await http("GET", f"{gateway.base_url}/api/docs/via-gateway")
    assert response.status_code == 200 and response.json()["id"] == "via-gateway"
    response = await http("GET", f"{gateway.base_url}/api/docs/via-gateway/state")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    stored: Doc[Any] = Doc()
    stored.apply_update(response.content)
    assert str(stored.get("text", type=Text)) == "posted through the gateway"

    # Larger than the gateway's limit, far below the editor's: the gateway answers.
    response = await http(
        "POST", f"{gateway.base_url}/api/docs/via-gateway/updates", b"\x00" * 70_000
    )
    assert response.status_code == 413
    assert response.json() == {"error": "TooLarge", "message": "request body too large"}

    for editor in pair:
        editor.kill()
    await asyncio.wait_for(listener.closed.wait(), timeout=5)
    assert listener.close_code == 1013

    async def readiness() -> float:
        return (await http("GET", f"{gateway.base_url}/readyz")).status_code

    assert await settle(readiness, 503, timeout=5) == 503
    response = await http("GET", f"{gateway.base_url}/api/docs")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "Unavailable"
    code, _ = await close_of(f"{gateway.ws_url}/via-gateway")
    assert code == 1013
    await listener.close()
