"""Size limits against real processes: documents at their cap, oversized HTTP bodies, and a
client that never reads. Each case asserts the precise refusal, that the document did not
change, and that another client of the same document is unaffected. The caps hold the same
straight at the editor and through the gateway: those cases run on both (`route`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Text

from tests.abuse.editor import only_worker, send_frames, start_editor
from tests.fuzz import stats
from tests.fuzz.frames import update_frame
from tests.fuzz.live import (
    close_code_after,
    http_get,
    stored_state,
    text_of,
    total_rss_bytes,
    wait_closed,
)
from tests.support.processes import (
    EditorInstance,
    GatewayInstance,
    PostgresDatabase,
    ServiceProcess,
)
from tests.support.rawws import never_reading_websocket
from tests.support.yclient import YClient, wait_until

DOCUMENT_CAP = 256 * 1024
FRAME_LIMIT = 64 * 1024


@pytest.fixture
def capped_editor(editors: list[EditorInstance], pg_database: PostgresDatabase) -> EditorInstance:
    """An editor with a small document cap and frame limit, for bodies that pass them."""
    return start_editor(
        editors,
        pg_database,
        COLLAB_MAX_DOCUMENT_BYTES=str(DOCUMENT_CAP),
        COLLAB_MAX_FRAME_BYTES=str(FRAME_LIMIT),
    )


@pytest.fixture
def capped_gateway(
    gateways: list[GatewayInstance], capped_editor: EditorInstance
) -> GatewayInstance:
    """A gateway in front of `capped_editor`, with the same frame limit."""
    gateway = GatewayInstance(
        "abuse-gateway",
        upstreams=[capped_editor.base_url],
        extra_env={"GATEWAY_MAX_FRAME_BYTES": str(FRAME_LIMIT)},
    )
    gateways.append(gateway)
    gateway.start()
    return gateway


@pytest.fixture(params=["editor", "gateway"])
def route(request: pytest.FixtureRequest, capped_editor: EditorInstance) -> ServiceProcess:
    """Where a case sends its sockets and bodies: straight to the editor, or the gateway."""
    if request.param == "editor":
        return capped_editor
    gateway: GatewayInstance = request.getfixturevalue("capped_gateway")
    return gateway


def big_update(client_id: int, size: int) -> bytes:
    doc: Doc[Any] = Doc(client_id=client_id)
    doc.get("text", type=Text).insert(0, "z" * size)
    return doc.get_update()


async def settled_state(base_url: str, doc_id: str) -> bytes:
    """The stored state once two reads a moment apart agree (pending commits landed)."""
    previous = await stored_state(base_url, doc_id)
    while True:
        await asyncio.sleep(0.2)
        current = await stored_state(base_url, doc_id)
        if current == previous:
            return current
        previous = current


async def test_a_document_at_its_size_cap_refuses_the_update_with_4413_and_stays_as_it_was(
    capped_editor, route
):
    doc_id = "capped"
    url = f"{route.ws_url}/{doc_id}"
    peer = await YClient(url).connect()
    other = await YClient(url).connect()
    writer = await send_frames(url, [])
    code = None
    accepted = 0
    for index in range(10):  # 60 KB each: the fifth crosses 256 KB
        before = await settled_state(capped_editor.base_url, doc_id) if accepted else b""
        await writer.send(update_frame(big_update(100 + index, 60_000)))
        try:
            reply_code = await close_code_after(writer, timeout=1.5)
        except Exception:
            reply_code = writer.close_code
        if reply_code is not None:
            code = reply_code
            break
        accepted += 1
    assert code == 4413, (code, accepted)
    assert accepted == 4
    after = await settled_state(capped_editor.base_url, doc_id)
    assert after == before and len(text_of(after)) == 4 * 60_000
    peer.insert("still here;")  # a small edit still fits
    await wait_until(lambda: "still here;" in str(other.text), what="the small edit")
    assert not peer.closed.is_set() and not other.closed.is_set()
    fresh = await YClient(url).connect()
    assert (
        str(fresh.text)
        == str(peer.text)
        == text_of(await settled_state(capped_editor.base_url, doc_id))
    )
    for client in (peer, other, fresh):
        await client.close()


async def chunks(body: bytes, size: int = 16_384) -> AsyncIterator[bytes]:
    """The body as a stream: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_oversized_update_bodies_get_413_with_a_json_message_and_change_nothing(
    capped_editor, capped_gateway, route
):
    # One client on each path, whichever the bodies take.
    peer = await YClient(f"{capped_editor.ws_url}/posted").connect()
    other = await YClient(f"{capped_gateway.ws_url}/posted").connect()
    peer.insert("kept;")
    await wait_until(lambda: str(other.text) == "kept;", what="the first edit")
    before = await settled_state(capped_editor.base_url, "posted")
    oversized = big_update(7, FRAME_LIMIT + 1_000)  # a valid update, over the frame limit

    url = f"{route.base_url}/api/docs/posted/updates"
    outcomes = {}
    async with httpx.AsyncClient(timeout=20) as http:
        outcomes["Content-Length"] = await http.post(url, content=oversized)
        outcomes["chunked"] = await http.post(url, content=chunks(oversized))
        # Valid and under the frame limit, but the document would pass its cap.
        posted = 0
        for index in range(5):
            response = await http.post(url, content=big_update(20 + index, 60_000))
            if response.status_code != 200:
                outcomes["document cap"] = response
                break
            posted += 1
    wrong = {
        name: (response.status_code, response.text[:120])
        for name, response in outcomes.items()
        if response.status_code != 413
        or response.headers.get("content-type") != "application/json"
        or response.json().get("error") != "TooLarge"
        or not response.json().get("message")
    }
    assert "document cap" in outcomes
    assert not wrong, f"expected 413 with a JSON TooLarge message: {wrong}"
    after = await settled_state(capped_editor.base_url, "posted")
    # Only the posts under both limits were applied: none of the refused bodies left a trace.
    assert len(text_of(after)) == len("kept;") + 60_000 * posted and posted == 4
    assert text_of(before) == "kept;"
    peer.insert("after;")
    await wait_until(lambda: str(other.text).endswith("after;"), what="an edit after the posts")
    assert not peer.closed.is_set() and not other.closed.is_set()
    for client in (peer, other):
        await client.close()


async def test_a_client_that_never_reads_is_dropped_and_the_editor_memory_stays_bounded(
    editors, pg_database
):
    editor = start_editor(editors, pg_database, COLLAB_SEND_QUEUE_BYTES=str(1024 * 1024))
    url = f"{editor.ws_url}/unread"
    writer = await YClient(url).connect()
    reader = await YClient(url).connect()
    stuck = never_reading_websocket(editor.port, "/ws/docs/unread")
    worker = {only_worker(editor)}
    before = peak = total_rss_bytes(worker)
    chunk = 300_000
    started = time.monotonic()
    for n in range(50):  # 15 MB of updates; the stuck client's queue holds 1 MB
        writer.insert(f"{n:06d}" + "x" * (chunk - 6))
        del writer.text[0 : len(writer.text)]
        await writer.flushed()
        await wait_until(
            lambda n=n: sum(1 for f in reader.received_frames if len(f) >= chunk) >= n + 1,
            what=f"the reader to get update {n}",
        )
        peak = max(peak, total_rss_bytes(worker))
    # README: closed with 1013, then cut off if it does not take the close frame within 10 s.
    dropped_after = await asyncio.to_thread(wait_closed, stuck, 15)
    stuck.close()
    grown = peak - before
    stats.record("abuse: editor RSS growth with a client that never reads (MB)", grown // 1_000_000)
    stats.record(
        "abuse: seconds until the editor drops a client that never reads",
        int(dropped_after if dropped_after is not None else -1),
    )
    assert grown < 30_000_000, f"the worker grew by {grown / 1e6:.0f} MB for a 1 MB queue"
    early = (await http_get(f"{editor.base_url}/metrics")).text
    slow = [line for line in early.splitlines() if "slow_consumer" in line and "refused" in line]
    assert dropped_after is not None, (
        f"the client that never reads was refused ({slow}) but the editor still holds its "
        f"connection 15 s after the flood (the worker grew {grown / 1e6:.0f} MB): the close frame "
        "sits in the transport's buffer, and a graceful close waits for a flush that never comes"
    )
    assert time.monotonic() - started < 60
    metrics = (await http_get(f"{editor.base_url}/metrics")).text
    assert 'collab_refused_frames_total{reason="slow_consumer"} 1.0' in metrics
    assert not writer.closed.is_set() and not reader.closed.is_set()
    for client in (writer, reader):
        await client.close()
