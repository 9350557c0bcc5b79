"""Updates whose dependencies the room does not have, straight at an editor.

yrs keeps the structs of such an update inside the Doc, waiting for the missing ones,
and even a refused update can leave structs behind; nothing reports them. The editor
therefore takes a client's update only if yrs integrates it whole: one that depends on
changes the room lacks is dropped (the room reloads from the store) and its sender asked
again with a SyncStep1, and the ninth such update on one connection closes it with 4400;
an update yrs refuses closes the connection with 4400 and the room reloads as well.
These tests show what a client sees:

- a refused update changes nothing for anyone: watchers, joiners and the store agree;
- updates that keep waiting for missing ones cannot hoard memory past the size cap:
  they are dropped, and their connection closed after a few.
"""

from __future__ import annotations

import asyncio

from pycrdt import Doc, Text

from tests.abuse.editor import only_worker, send_and_close_code, send_frames, start_editor
from tests.fuzz import stats
from tests.fuzz.frames import author_update, update_frame
from tests.fuzz.live import stored_state, text_of, total_rss_bytes
from tests.support.yclient import YClient, wait_until
from tests.support.yupdates import REFUSED_UPDATE_WITH_A_WAITING_STRUCT


async def test_a_refused_update_leaves_nothing_behind_in_the_room(editors, pg_database):
    editor = start_editor(editors, pg_database)
    url = f"{editor.ws_url}/waiting"
    writer = await send_frames(url, [update_frame(author_update())])
    watcher = await YClient(url).connect()
    await wait_until(lambda: str(watcher.text) == "hello", what="the watcher to get hello")

    code, _ = await send_and_close_code(url, update_frame(REFUSED_UPDATE_WITH_A_WAITING_STRUCT))
    assert code == 4400
    watcher.insert("!")  # a legitimate edit afterwards (joiners then get the room's new state)
    await watcher.flushed()

    async def stored_text() -> str:
        return text_of(await stored_state(editor.base_url, "waiting"))

    for _ in range(100):
        if await stored_text() == "hello!":
            break
        await asyncio.sleep(0.05)
    joiner = await YClient(url).connect()
    stored = await stored_text()
    views = {"watcher": str(watcher.text), "joiner": str(joiner.text), "stored": stored}
    assert set(views.values()) == {"hello!"}, (
        f"a refused update changed the document for some: {views} (the joiner got the room's "
        "copy, which holds what yrs integrated before refusing; nothing stored or relayed it)"
    )
    for client in (watcher, joiner):
        await client.close()
    await writer.close()


async def test_updates_waiting_for_missing_ones_cannot_grow_memory_without_limit(
    editors, pg_database
):
    editor = start_editor(editors, pg_database, COLLAB_MAX_DOCUMENT_BYTES=str(1024 * 1024))
    url = f"{editor.ws_url}/hoard"
    watcher = await YClient(url).connect()
    worker = {only_worker(editor)}
    before = total_rss_bytes(worker)
    ws = await send_frames(url, [])
    sent = 0
    closed = None
    for index in range(40):  # 40 MB of updates, each missing its first struct
        author: Doc = Doc(client_id=1000 + index)
        text = author.get("text", type=Text)
        text.insert(0, "x")
        gap = author.get_state()
        text.insert(1, "y" * 1_000_000)
        try:
            await ws.send(update_frame(author.get_update(gap)))
        except Exception:
            closed = ws.close_code
            break
        sent += 1
    else:
        try:
            await ws.send(b"\x00\x00\x01\x00")
            await ws.recv()
        except Exception:
            closed = ws.close_code
    grown = total_rss_bytes(worker) - before
    stats.record("abuse: MB held by updates with missing dependencies", grown // 1_000_000)
    assert closed in (4400, 4413) or grown < 20_000_000, (
        f"{sent} updates of 1 MB that wait for missing ones were all accepted into a document "
        f"capped at 1 MB: the worker grew by {grown / 1e6:.0f} MB, nothing was stored "
        "(the room reports no change) and the socket is still open"
    )
    assert not watcher.closed.is_set()
    await watcher.close()
    await ws.close()
