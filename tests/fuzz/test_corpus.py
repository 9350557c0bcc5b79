"""The regression corpus (tests/fuzz/corpus/): every input, on every run, in process and over
a real socket.

The corpus holds the nastiest representative inputs (overlong and truncated varints, huge
length prefixes and counts, truncated and half-valid updates, updates with missing
dependencies, odd awareness states, text) and every input the fuzz found that broke
something (yrs panics, the 4-byte update that cost a worker half a gigabyte). One file per
input: `.bin` is a binary frame, `.txt` a text frame. Over a socket, each input must get
the oracle's code and leave a document that a fresh client and the store agree on, and
that still holds everything written before (inputs that make the editor rebuild the room
from the store included); an update that waits for changes nobody has keeps its
connection open, and its sender is asked again with a SyncStep1. A property failure of
the fuzz saves its input in test-artifacts/fuzz-findings/ for this folder.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.fuzz import stats
from tests.fuzz.frames import (
    author_update,
    classify,
    corpus_inputs,
    covers,
    same_document,
    state_of,
    update_frame,
    update_pool,
)
from tests.fuzz.live import close_code_after, raw_socket, stored_state, worker_pids
from tests.fuzz.test_room_fuzz import RoomCampaign
from tests.support.processes import EditorInstance
from tests.support.yclient import YClient

INPUTS = corpus_inputs()
DOCUMENT = (author_update(), *update_pool())


def test_the_corpus_holds_the_representative_inputs():
    names = {name for name, _ in INPUTS}
    assert len(INPUTS) >= 25
    for expected in ("overlong-varint-length.bin", "huge-length-prefix.bin", "text-frame.txt"):
        assert expected in names


@pytest.mark.parametrize(("name", "frame"), INPUTS, ids=[name for name, _ in INPUTS])
@pytest.mark.parametrize("preload", [0, len(update_pool())], ids=["empty", "full"])
def test_corpus_input_in_process(name, frame, preload):
    campaign = RoomCampaign()
    campaign.room([frame], preload=preload)
    stats.record("corpus inputs replayed in process", 1)
    assert not campaign.mismatches, campaign.mismatches


@pytest.mark.timeout(120, method="thread")
async def test_corpus_over_a_real_socket(editors, pg_database):
    editor = EditorInstance(
        "corpus-editor",
        database_url=pg_database.url,
        redis_url=None,
        workers=1,
        extra_env={"COLLAB_LOG_LEVEL": "WARNING"},
    )
    editors.append(editor)
    editor.start()
    pids = worker_pids(editor)
    watcher = await YClient(f"{editor.ws_url}/corpus-watch").connect()
    mismatches = []
    state = state_of(DOCUMENT)
    for index, (name, frame) in enumerate(INPUTS):
        doc_id = f"corpus-{index}"
        writer = await raw_socket(f"{editor.ws_url}/{doc_id}")
        for update in DOCUMENT:
            await writer.send(update_frame(update))
        verdict = classify(frame, room_state=state, size_bytes=len(state))
        expected = verdict.close_code(0)
        ws = await raw_socket(f"{editor.ws_url}/{doc_id}")
        await ws.send(frame)
        if expected is None:
            code, asked = await _still_answering(ws)
            await ws.close()
            if asked != 1 + verdict.waits:  # the greeting, and once more if it waited
                mismatches.append(f"{name}: {asked} SyncStep1, expected {1 + verdict.waits}")
        else:
            code = await close_code_after(ws)
        if code != expected:
            mismatches.append(f"{name}: {code}, expected {expected}")
        await writer.close()
        if not await _consistent(editor, doc_id, state):
            mismatches.append(f"{name}: a fresh client, the store and the document disagree")
        stats.record("corpus inputs replayed over a socket", 1)
    watcher.insert("after the corpus;")
    fresh = await YClient(f"{editor.ws_url}/corpus-watch").connect()
    assert str(fresh.text) == "after the corpus;"
    assert not mismatches, mismatches
    assert worker_pids(editor) == pids, "the editor worker died on a corpus input"
    for client in (watcher, fresh):
        await client.close()


async def _still_answering(ws: Any) -> tuple[int | None, int]:
    """(None when the socket answers a SyncStep1 with a SyncStep2, else its close code;
    how many SyncStep1 it received meanwhile)."""
    asked = 0
    try:
        await ws.send(b"\x00\x00\x01\x00")
        while True:
            reply = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(reply, bytes) and reply[:2] == b"\x00\x00":
                asked += 1
            elif isinstance(reply, bytes) and reply[:2] == b"\x00\x01":
                return None, asked
    except Exception:
        return (ws.close_code if ws.close_code is not None else -1), asked


async def _consistent(editor: EditorInstance, doc_id: str, written: bytes) -> bool:
    """Whether a fresh client gets the stored document, and it holds `written`."""
    deadline = time.monotonic() + 5
    while True:
        fresh = await YClient(f"{editor.ws_url}/{doc_id}").connect()
        stored = await stored_state(editor.base_url, doc_id)  # served, and it decodes
        state = fresh.doc.get_update()
        await fresh.close()
        if same_document(state, stored) and covers(stored, written):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
