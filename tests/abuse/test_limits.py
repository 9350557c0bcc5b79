"""Floods, crowds and slow clients against real processes; each case asserts the precise
refusal and that another client of the same document is unaffected.

What exists where (checked here, through the gateway and straight at an editor):
- Message rate: both limit it per connection with the same token bucket and close a
  flooding socket with 4429 (GATEWAY_RATE_PER_SECOND / GATEWAY_RATE_BURST at the gateway,
  COLLAB_RATE_PER_SECOND / COLLAB_RATE_BURST at the editor; 200/s, burst 400 by default).
- Connections: the gateway counts them per client address (4429 beyond
  GATEWAY_MAX_CONNECTIONS_PER_IP); the editor counts them per worker (1013 beyond
  COLLAB_MAX_CONNECTIONS_PER_WORKER).
- Slow handshakes: both drop a connection whose request head is not complete in time
  (GATEWAY_HANDSHAKE_TIMEOUT_SECONDS, COLLAB_HANDSHAKE_TIMEOUT_SECONDS; 10 s by default),
  plain HTTP requests included; the deadline is per request head, so keep-alive holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import websockets

from tests.abuse.editor import round_trip, start_editor
from tests.fuzz import stats
from tests.fuzz.live import http_get, raw_socket
from tests.support.processes import GatewayInstance
from tests.support.rawws import upgrade_request
from tests.support.yclient import YClient, wait_until


def start_gateway(gateways, editor, **env: str) -> GatewayInstance:
    gateway = GatewayInstance("abuse-gateway", upstreams=[editor.base_url], extra_env=env)
    gateways.append(gateway)
    return gateway.start()


async def edit_latency(writer: YClient, reader: YClient, mark: str) -> float:
    started = time.monotonic()
    writer.insert(mark)
    await wait_until(lambda: mark in str(reader.text), timeout=10, what=f"{mark} to arrive")
    return time.monotonic() - started


async def flood(ws, frame: bytes, count: int) -> int:
    """Send `frame` up to `count` times as fast as possible; how many went out."""
    sent = 0
    try:
        for _ in range(count):
            await ws.send(frame)
            sent += 1
    except websockets.ConnectionClosed:
        pass
    return sent


# Message floods ------------------------------------------------------------------------------


async def test_a_message_flood_through_the_gateway_is_closed_with_4429_and_peers_keep_syncing(
    editors, gateways, pg_database
):
    editor = start_editor(editors, pg_database)
    gateway = start_gateway(gateways, editor)  # the defaults: 200 messages/s, burst 400
    url = f"{gateway.ws_url}/flooded"
    writer = await YClient(url).connect()
    reader = await YClient(url).connect()
    flooder = await raw_socket(url)
    flooding = asyncio.create_task(flood(flooder, b"\x03", 5_000))
    lags = [await edit_latency(writer, reader, f"during-{index};") for index in range(5)]
    sent = await flooding
    await asyncio.wait_for(flooder.wait_closed(), 10)
    stats.record("abuse: frames of a flood through the gateway", sent)
    assert flooder.close_code == 4429 and flooder.close_reason == "message rate limit exceeded"
    assert max(lags) < 1, lags
    assert not writer.closed.is_set() and not reader.closed.is_set()
    for client in (writer, reader):
        await client.close()


async def test_a_message_flood_straight_at_the_editor_is_closed_with_4429_and_peers_keep_syncing(
    editors, pg_database
):
    editor = start_editor(editors, pg_database)  # the defaults: 200 messages/s, burst 400
    url = f"{editor.ws_url}/flooded"
    writer = await YClient(url).connect()
    reader = await YClient(url).connect()
    flooder = await raw_socket(url)
    started = time.monotonic()
    flooding = asyncio.create_task(flood(flooder, b"\x03", 20_000))
    lags = [await edit_latency(writer, reader, f"during-{index};") for index in range(5)]
    await flooding
    with contextlib.suppress(TimeoutError):  # judged by the close code below
        await asyncio.wait_for(flooder.wait_closed(), 10)
    closed_after = time.monotonic() - started
    # Frames are written faster than the editor reads them: how soon it closes is the figure.
    stats.record("abuse: flood straight at the editor, closed after (ms)", int(closed_after * 1000))
    assert flooder.close_code == 4429 and flooder.close_reason == "message rate limit exceeded"
    assert closed_after < 5, closed_after
    assert max(lags) < 1, lags
    assert not writer.closed.is_set() and not reader.closed.is_set()
    late = await YClient(url).connect()  # the document is whole and still served
    assert str(late.text) == str(writer.text) == str(reader.text)
    exposed = (await http_get(f"{editor.base_url}/metrics")).text
    assert 'collab_refused_frames_total{reason="rate_limited"} 1.0' in exposed
    for client in (writer, reader, late):
        await client.close()


# Crowds --------------------------------------------------------------------------------------


async def open_from(url: str, address: str, headers: dict[str, str] | None = None):
    """A socket from a given loopback address; (socket or None, close code if refused)."""
    try:
        ws = await websockets.connect(
            url, compression=None, local_addr=(address, 0), additional_headers=headers
        )
    except (OSError, websockets.InvalidHandshake) as error:
        return None, f"{type(error).__name__}"
    try:
        async with asyncio.timeout(1.5):
            await ws.recv()  # the editor greets an admitted client; a refusal closes
            await ws.recv()
    except TimeoutError:
        return ws, None
    except websockets.ConnectionClosed:
        return None, ws.close_code
    return ws, None


async def crowd(url: str, address: str, count: int) -> tuple[list, list]:
    """`count` sockets opened at once from `address`: (those admitted, close codes of the rest)."""
    outcomes = await asyncio.gather(*(open_from(url, address) for _ in range(count)))
    admitted = [ws for ws, _ in outcomes if ws is not None]
    refused = [code for ws, code in outcomes if ws is None]
    return admitted, refused


async def test_a_thousand_sockets_from_one_address_get_exactly_the_gateways_quota(
    editors, gateways, pg_database, redis_server
):
    editor = start_editor(editors, pg_database, redis_url=redis_server.url, workers=2)
    gateway = start_gateway(gateways, editor)  # GATEWAY_MAX_CONNECTIONS_PER_IP=200
    url = f"{gateway.ws_url}/crowded"
    peer = await YClient(url).connect()
    other = await YClient(url).connect()

    admitted, refused = await crowd(url, "127.0.0.3", 1000)
    stats.record(
        "connections opened (abuse: one address at the gateway)", len(admitted) + len(refused)
    )
    assert len(admitted) == 200, (len(admitted), set(map(str, refused)))
    assert set(refused) == {4429}

    # Another address is not affected, and X-Forwarded-For from an untrusted peer is ignored.
    spoofed = await asyncio.gather(
        *(
            open_from(url, "127.0.0.4", {"X-Forwarded-For": f"10.1.{index // 250}.{index % 250}"})
            for index in range(250)
        )
    )
    stats.record("connections opened (abuse: one address at the gateway)", len(spoofed))
    assert sum(ws is not None for ws, _ in spoofed) == 200
    newcomer, code = await open_from(url, "127.0.0.5")  # a third address: admitted
    assert newcomer is not None, code
    assert await round_trip(newcomer) < 2
    await newcomer.close()
    assert await edit_latency(peer, other, "through-the-crowd;") < 2
    assert not peer.closed.is_set() and not other.closed.is_set()
    for ws in admitted + [ws for ws, _ in spoofed if ws is not None]:
        await ws.close()
    for client in (peer, other):
        await client.close()


async def test_a_worker_full_of_sockets_refuses_more_with_1013_and_keeps_serving_its_own(
    editors, pg_database
):
    editor = start_editor(editors, pg_database, COLLAB_MAX_CONNECTIONS_PER_WORKER="300")
    url = f"{editor.ws_url}/full"
    peer = await YClient(url).connect()
    other = await YClient(url).connect()
    admitted, refused = await crowd(url, "127.0.0.6", 1000)
    stats.record("connections opened (abuse: one worker's limit)", len(admitted) + len(refused))
    assert len(admitted) == 298, (len(admitted), set(map(str, refused)))
    assert set(refused) == {1013}
    assert await edit_latency(peer, other, "while-full;") < 2
    await admitted[0].close()
    await asyncio.sleep(0.5)
    again, code = await open_from(url, "127.0.0.6")
    assert again is not None, code  # a freed slot is usable again
    for ws in [*admitted[1:], again]:
        await ws.close()
    assert not peer.closed.is_set() and not other.closed.is_set()
    for client in (peer, other):
        await client.close()


# Slow handshakes (slowloris) -----------------------------------------------------------------

TRICKLE_SECONDS = 6  # how long an attack lasts; the deadline under test is 1 s


async def trickle(
    port: int,
    request: bytes,
    *,
    count: int,
    interval: float = 0.2,
    duration: float = TRICKLE_SECONDS,
):
    """`count` connections sending `request` (never its last byte) one byte per `interval`.

    Returns how long each stayed open (None: still open after `duration`).
    """
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    started = time.monotonic()
    closed_after: list[float | None] = [None] * count

    async def one(index: int) -> None:
        reader, writer = connections[index]
        position = 0
        while time.monotonic() - started < duration:
            if position < len(request) - 1:  # never the final byte
                try:
                    writer.write(request[position : position + 1])
                    await writer.drain()
                except ConnectionError:
                    closed_after[index] = time.monotonic() - started
                    return
                position += 1
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout=interval)
            except TimeoutError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                closed_after[index] = time.monotonic() - started
                return
        writer.close()

    await asyncio.gather(*(one(index) for index in range(count)))
    for _, writer in connections:
        writer.close()
    return closed_after


def slowest_drop(closed_after: list[float | None]) -> float:
    """Seconds until the last trickling connection was dropped; every one must have been."""
    still_open = sum(seconds is None for seconds in closed_after)
    assert still_open == 0, (
        f"{still_open} of {len(closed_after)} trickling connections "
        f"still open after {TRICKLE_SECONDS} s"
    )
    return max(seconds for seconds in closed_after if seconds is not None)


async def test_slowloris_at_the_gateway_is_cut_off_by_the_handshake_deadline(
    editors, gateways, pg_database
):
    editor = start_editor(editors, pg_database)
    gateway = start_gateway(gateways, editor, GATEWAY_HANDSHAKE_TIMEOUT_SECONDS="1")
    url = f"{gateway.ws_url}/loris"
    peer = await YClient(url).connect()
    other = await YClient(url).connect()
    attack = asyncio.create_task(
        trickle(gateway.port, upgrade_request(gateway.port, "/ws/docs/loris"), count=300)
    )
    await asyncio.sleep(0.5)
    newcomer = await YClient(url).connect(timeout=5)  # still admitted during the attack
    lag = await edit_latency(peer, other, "during-loris;")
    closed_after = await attack
    stats.record("connections opened (abuse: slowloris at the gateway)", len(closed_after))
    slowest = slowest_drop(closed_after)
    stats.record("abuse: slowloris at the gateway, slowest drop (ms)", int(slowest * 1000))
    assert slowest < 3, slowest
    assert lag < 1 and str(newcomer.text) == str(peer.text)
    for client in (peer, other, newcomer):
        assert not client.closed.is_set()
        await client.close()


def healthz_request(port: int) -> bytes:
    """The bytes of a plain HTTP GET /healthz on a loopback port."""
    return f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def keep_alive_requests(port: int, *, gap: float) -> list[bytes]:
    """Two GET /healthz on one connection, `gap` seconds apart: the status line of each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = healthz_request(port)
    statuses = []
    try:
        for index in range(2):
            if index:
                await asyncio.sleep(gap)
            writer.write(request)
            await writer.drain()
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                assert b"transfer-encoding: chunked" in head.lower(), head
                await reader.readuntil(b"\r\n0\r\n\r\n")  # the last chunk
            statuses.append(head.split(b"\r\n", 1)[0])
    finally:
        writer.close()
    return statuses


async def test_slowloris_straight_at_the_editor_is_cut_off_by_the_handshake_deadline(
    editors, pg_database
):
    """WebSocket upgrades and plain HTTP requests alike; logged once, not once per socket."""
    editor = start_editor(
        editors, pg_database, COLLAB_HANDSHAKE_TIMEOUT_SECONDS="1", COLLAB_LOG_LEVEL="INFO"
    )
    url = f"{editor.ws_url}/loris"
    peer = await YClient(url).connect()
    other = await YClient(url).connect()
    attack = asyncio.gather(
        trickle(editor.port, upgrade_request(editor.port, "/ws/docs/loris"), count=150),
        trickle(editor.port, healthz_request(editor.port), count=50),
    )
    await asyncio.sleep(0.5)
    newcomer = await YClient(url).connect(timeout=5)  # still admitted during the attack
    lag = await edit_latency(peer, other, "during-loris;")
    # Keep-alive: the deadline is per request head, not per connection.
    statuses = await keep_alive_requests(editor.port, gap=1.5)
    upgrades, plain = await attack
    closed_after = upgrades + plain
    stats.record("connections opened (abuse: slowloris at the editor)", len(closed_after))
    slowest = slowest_drop(closed_after)
    stats.record("abuse: slowloris at the editor, slowest drop (ms)", int(slowest * 1000))
    assert slowest < 3, slowest
    assert statuses == [b"HTTP/1.1 200 OK"] * 2, statuses
    assert lag < 1 and str(newcomer.text) == str(peer.text)
    for client in (peer, other, newcomer):
        assert not client.closed.is_set()
        await client.close()
    exposed = (await http_get(f"{editor.base_url}/metrics")).text
    assert 'collab_refused_connections_total{reason="handshake_timeout"} 200.0' in exposed
    dropped = [line for line in editor.logs().splitlines() if "no complete request head" in line]
    assert len(dropped) == 1, dropped  # a flood of them is summed up, at most once a minute
