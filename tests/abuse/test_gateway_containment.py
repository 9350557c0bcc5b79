"""What the gateway must contain by itself, found by the socket fuzz (tests/fuzz/).

- Frames over the limit sent by many clients at once: every one is refused with 4413
  at once. (Before the fix in gateway/relay.py, about one in five stayed open for good:
  asyncio.wait_for on Python 3.11 swallowed the cancellation of the editor-to-client
  task, which then waited for the editor's next frame forever.)
- A document larger than twice the frame limit (still within the document cap): its
  SyncStep2 is one frame from the editor. (Before the fix the gateway's upstream socket
  had the client's size limit: it cut the session with 1009, answered 1013 to the
  client and marked the healthy editor unhealthy, for every client opening it.)
"""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.fuzz import stats
from tests.fuzz.live import close_code_after, raw_socket
from tests.support.processes import EditorInstance, GatewayInstance
from tests.support.yclient import YClient, wait_until

FRAME_LIMIT = 65536


def start(
    editors, gateways, pg, redis, **gateway_env: str
) -> tuple[EditorInstance, GatewayInstance]:
    editor = EditorInstance(
        "contain-editor",
        database_url=pg.url,
        redis_url=redis.url,
        workers=2,
        extra_env={"COLLAB_MAX_FRAME_BYTES": str(FRAME_LIMIT), "COLLAB_LOG_LEVEL": "WARNING"},
    )
    editors.append(editor)
    editor.start()
    gateway = GatewayInstance(
        "contain-gateway",
        upstreams=[editor.base_url],
        extra_env={"GATEWAY_MAX_FRAME_BYTES": str(FRAME_LIMIT), **gateway_env},
    )
    gateways.append(gateway)
    gateway.start()
    return editor, gateway


async def test_over_limit_frames_from_many_clients_at_once_are_all_refused_with_4413(
    editors, gateways, pg_database, redis_server
):
    _, gateway = start(editors, gateways, pg_database, redis_server)
    peer = await YClient(f"{gateway.ws_url}/crowd-0").connect()
    other = await YClient(f"{gateway.ws_url}/crowd-0").connect()
    frame = b"\x00\x02" + b"\x00" * (FRAME_LIMIT + 1)

    async def oversize(index: int) -> tuple[int | None, float]:
        ws = await raw_socket(f"{gateway.ws_url}/crowd-{index % 3}")
        started = time.monotonic()
        if index % 2:
            await ws.send([frame[:20_000], frame[20_000:40_000], frame[40_000:]])  # fragments
        else:
            await ws.send(frame)
        code = await close_code_after(ws, timeout=8)
        return code, time.monotonic() - started

    outcomes = []
    for _ in range(4):
        outcomes += await asyncio.gather(*(oversize(index) for index in range(30)))
    stats.record("connections opened (abuse: gateway over-limit crowd)", len(outcomes))
    stuck = [outcome for outcome in outcomes if outcome[0] != 4413]
    assert not stuck, f"{len(stuck)} of {len(outcomes)} not refused with 4413: {stuck[:5]}"
    assert max(seconds for _, seconds in outcomes) < 3
    peer.insert("after the crowd;")
    await wait_until(lambda: str(other.text) == "after the crowd;", what="the peers to sync")
    assert not peer.closed.is_set() and not other.closed.is_set()
    await peer.close()
    await other.close()


async def test_a_document_larger_than_twice_the_frame_limit_opens_through_the_gateway(
    editors, gateways, pg_database, redis_server
):
    editor, gateway = start(editors, gateways, pg_database, redis_server)
    writer = await YClient(f"{editor.ws_url}/big").connect()
    for index in range(4):  # four updates under the frame limit: a 200 KB document
        writer.insert(f"{index}" * 50_000)
        await writer.flushed()
    reader = await YClient(f"{editor.ws_url}/big").connect()
    await wait_until(lambda: len(str(reader.text)) == 200_000, what="the direct reader")

    for _ in range(3):
        through = YClient(f"{gateway.ws_url}/big")
        await through.connect(wait_synced=False)
        synced = asyncio.create_task(through.synced.wait())
        closed = asyncio.create_task(through.closed.wait())
        await asyncio.wait({synced, closed}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        closed.cancel()
        assert through.synced.is_set(), (
            f"a client of a 200 KB document through the gateway was closed with "
            f"{through.close_code} ({through.close_reason!r}) instead of syncing"
        )
        assert len(str(through.text)) == 200_000
        await through.close()
    async with httpx.AsyncClient(timeout=5) as client:
        ready = await client.get(f"{gateway.base_url}/readyz")
        failures = await client.get(f"{gateway.base_url}/metrics")
    assert ready.status_code == 200, ready.text
    assert "collab_gateway_upstream_failures_total 0.0" in failures.text
    assert not writer.closed.is_set() and not reader.closed.is_set()
    await writer.close()
    await reader.close()
