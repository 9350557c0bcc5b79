"""Fan-out messages that arrive out of causal order: every client must still get everything.

Found by `test_redis_restart_mid_run_loses_nothing_and_converges_within_5s` (about one
run in fifteen on a loaded machine): after a Redis restart, process A's publish of an
update T is held back by the Redis client's reconnect retries while process B has
already read T from the log (heal loop), a writer on B has typed next to T, and B has
published that edit E. A third process C then receives E before T. E's content waits
inside C's Doc (its origin, T, is missing); T's arrival integrates both. C must pass
on what changed, T *and* E, to its clients; if it passes on only the message it just
received, its clients never get E (the log holds it and C's sequence numbers say C has
it, so nothing ever repairs them), and they diverge from everyone else for good.

This test replays that order on a real `RoomRegistry` and `Room` of the editor,
in-process and deterministically.
"""

from __future__ import annotations

import time
from typing import Any

from collab.codec import parse
from collab.conf import CollabConfig
from collab.registry import RoomRegistry
from collab.room import Room
from pycrdt import Doc, Text


class RecordingPeer:
    """A local client as the room sees it; keeps what it is sent."""

    def __init__(self) -> None:
        self.awareness_ids: set[int] = set()
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def updates_of(doc: Doc[Any]) -> list[bytes]:
    captured: list[bytes] = []
    doc.observe(lambda event: captured.append(event.update))
    return captured


def event(update: bytes, seq: int) -> dict[str, Any]:
    return {
        "type": "collab.update",
        "doc": "reordered",
        "origin": "another-process",
        "first_seq": seq,
        "last_seq": seq,
        "updates": [update],
        "sent_at": time.time(),
    }


def test_a_remote_update_that_completes_a_waiting_one_reaches_local_clients_with_it():
    # Writer on process A types T; a writer on process B, which has T, types E after it.
    a_doc: Doc[Any] = Doc()
    a_updates = updates_of(a_doc)
    a_doc.get("text", type=Text).insert(0, "T;")
    b_doc: Doc[Any] = Doc()
    b_doc.apply_update(a_updates[0])
    b_updates = updates_of(b_doc)
    b_doc.get("text", type=Text).insert(2, "E;")

    # Process C: a room with one local client; both updates arrive by fan-out, E first.
    registry = RoomRegistry(store=None, layer=None, config=CollabConfig())  # type: ignore[arg-type]
    room = Room("reordered", max_document_bytes=1 << 20)
    client = RecordingPeer()
    room.add_peer(client)
    registry.collab_update(room, event(b_updates[0], seq=2))  # type: ignore[arg-type]
    registry.collab_update(room, event(a_updates[0], seq=1))  # type: ignore[arg-type]
    assert str(room.doc.get("text", type=Text)) == "T;E;"
    assert room.seq.watermark == 2  # C believes it has both: no heal will come

    # What the local client can build from what it was sent.
    copy: Doc[Any] = Doc()
    for frame in client.frames:
        copy.apply_update(parse(frame).update)  # type: ignore[union-attr]
    assert str(copy.get("text", type=Text)) == "T;E;", (
        "the local client of process C never received E: the room passed on only the "
        "update it had just received, not what that update completed"
    )
