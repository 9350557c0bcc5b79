"""The codec and the room alone, fuzzed fast: no sockets, no database, no event loop.

`collab.session.Session` hands a frame to `collab.codec.parse` and then to the room;
`deliver` below does the same steps (size check, parse, apply, answer) so that tens of
thousands of frames cost seconds. What the room reports as changed (accepted changes and
the partial change of a refused update) is what the service stores and relays; a mirror
document built from those reports must stay identical to the room, whatever the input.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from collab.codec import (
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    parse,
)
from collab.errors import BadFrame, BadUpdate, CollabError, TooLarge
from collab.room import Room
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc

from tests.fuzz import stats
from tests.fuzz.frames import (
    MAX_AWARENESS_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_FRAME_BYTES,
    HalfValid,
    Oracle,
    author_update,
    claims_many_clients,
    frame_strategy,
    read_frame,
    read_varint,
    same_document,
    seeded_frames,
    update_pool,
    varint,
)

SCALE = float(os.environ.get("COLLAB_FUZZ_SCALE", "1"))
FRAMES_PER_ROOM = 2000


class Peer:
    """A local connection as the room sees it."""

    def __init__(self) -> None:
        self.awareness_ids: set[int] = set()
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def deliver(room: Room, peer: Peer, frame: bytes | str) -> tuple[bytes | None, list[bytes]]:
    """Session.receive's steps for one frame: (the change to store, frames sent back).

    Raises the CollabError that closes the connection; a BadUpdate carries the partial
    change the service stores and relays before closing.
    """
    if isinstance(frame, str):
        raise BadFrame("text frame")  # the consumer refuses these before the session
    if len(frame) > MAX_FRAME_BYTES:
        raise TooLarge("frame too large")
    message = parse(frame)
    if isinstance(message, SyncUpdate | SyncStep2):
        return room.apply_update(message.update), []
    if isinstance(message, SyncStep1):
        return None, [room.sync_step2(message.state_vector)]
    if isinstance(message, AwarenessUpdate):
        if len(message.payload) > MAX_AWARENESS_BYTES:
            raise TooLarge("awareness too large")
        room.apply_awareness(message.payload, peer)
        return None, []
    assert isinstance(message, QueryAwareness)
    snapshot = room.awareness_snapshot()
    return None, [snapshot] if snapshot is not None else []


class RoomCampaign:
    """Frames against rooms; the room must always equal the mirror of what it reported."""

    def __init__(self) -> None:
        self.sent = 0
        self.refused: dict[int, int] = {}
        self.partial = 0
        self.panics = 0
        self.skipped = 0
        self.mismatches: list[str] = []

    def run(self, frames: list[Any]) -> None:
        pool = update_pool()
        for number, start in enumerate(range(0, len(frames), FRAMES_PER_ROOM)):
            remaining = frames[start : start + FRAMES_PER_ROOM]
            while remaining:
                remaining = self.room(remaining, preload=(number * 29) % (len(pool) + 1))

    def room(self, frames: list[Any], *, preload: int) -> list[Any]:
        room = Room("fuzz", max_document_bytes=MAX_DOCUMENT_BYTES)
        mirror: Doc[Any] = Doc()
        for update in (author_update(), *update_pool()[:preload]):
            change = room.apply_update(update, from_client=False)
            if change is not None:  # some updates of the pool repeat what others hold
                mirror.apply_update(change)
        room.size_bytes = len(room.doc.get_update())
        peer = Peer()
        room.add_peer(peer)
        oracle = Oracle()
        rest: list[Any] = []
        for index, frame in enumerate(frames):
            gapless = isinstance(frame, HalfValid)
            if isinstance(frame, HalfValid):
                frame = frame.frame(room.doc.get_state())
            if claims_many_clients(frame):
                self.skipped += 1  # a known bug: tests/abuse/test_expensive_updates.py
                continue
            verdict = oracle.verdict(
                frame,
                room_state=room.doc.get_update,
                size_bytes=room.size_bytes,
                gapless=gapless,
            )
            if verdict.pending:
                self.skipped += 1  # a known bug: tests/abuse/test_missing_dependencies.py
                continue
            self.sent += 1
            code: int | None = None
            change: bytes | None = None
            try:
                change, replies = deliver(room, peer, frame)
            except BadUpdate as error:
                code, change = int(error.close_code), error.partial
                self.partial += change is not None
            except CollabError as error:
                code = int(error.close_code)
            else:
                for reply in replies:  # whatever the room answers must be a frame that decodes
                    answer = read_frame(reply)
                    assert answer is not None, reply[:40]
                    if answer.kind == "step2":
                        Doc().apply_update(answer.payload)
            if change is not None:
                mirror.apply_update(change)
                room.size_bytes += len(change)  # what the journal's commit would report
                oracle.forget()
            if code is not None:
                self.refused[code] = self.refused.get(code, 0) + 1
            if code != verdict.code:
                path = stats.save_finding("room-code", frame)
                self.mismatches.append(
                    f"{verdict.kind} frame {path.name}: {code}, expected {verdict.code}"
                )
            if verdict.panic:
                self.panics += 1
                rest = frames[index + 1 :]
                break
            if index % 250 == 0 and not same_document(room.doc.get_update(), mirror.get_update()):
                path = stats.save_finding("room-diverged", frame)
                self.mismatches.append(f"the room holds changes it never reported ({path.name})")
                break
        if not same_document(room.doc.get_update(), mirror.get_update()):
            self.mismatches.append("the room holds changes it never reported (end of room)")
        state = room.doc.get_update()
        fresh: Doc[Any] = Doc()
        fresh.apply_update(state)  # what a joiner or the store would load
        assert same_document(state, fresh.get_update())
        room.close()
        return rest


@pytest.mark.timeout(300, method="thread")
def test_codec_and_room_refuse_exactly_what_the_oracle_refuses_and_report_every_change():
    campaign = RoomCampaign()
    campaign.run(seeded_frames(seed=7, count=int(100_000 * SCALE)))
    stats.record("in-process frames (codec + room)", campaign.sent)
    report = (
        f"{campaign.sent} frames, refused {campaign.refused}, {campaign.partial} partial, "
        f"{campaign.panics} panics, {campaign.skipped} skipped (known bugs)"
    )
    print(report)
    assert not campaign.mismatches, "\n".join(campaign.mismatches[:20])
    assert campaign.sent >= 85_000 * SCALE, report
    assert campaign.partial > 0 and campaign.refused.get(4413, 0) > 0, report


# Hypothesis: the codec is a total function over bytes ------------------------------------------


@settings(
    max_examples=int(2000 * SCALE) or 1,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frame=frame_strategy().filter(lambda frame: isinstance(frame, bytes)))
def test_parse_answers_a_message_or_bad_frame_and_agrees_with_the_reference_reader(frame):
    stats.record("in-process frames (hypothesis, codec)")
    reference = read_frame(frame)
    try:
        message = parse(frame)
    except CollabError as error:
        assert error.close_code == 4400
        assert reference is None, f"refused a well-formed {reference} frame: {error}"
        return
    assert reference is not None, f"parsed a malformed frame as {message!r}"
    payload = getattr(message, "update", None)
    if payload is None:
        payload = getattr(message, "state_vector", None)
    if payload is None:
        payload = getattr(message, "payload", b"")
    assert payload == reference.payload


@settings(
    max_examples=int(600 * SCALE) or 1,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    frames=st.lists(frame_strategy(), min_size=1, max_size=8),
    preload=st.integers(0, 60),
)
def test_any_frame_sequence_leaves_the_room_equal_to_what_it_reported(frames, preload):
    stats.record("in-process frames (hypothesis, room)", len(frames))
    campaign = RoomCampaign()
    campaign.room(frames, preload=min(preload, len(update_pool())))
    assert not campaign.mismatches, campaign.mismatches


def test_a_state_vector_with_a_huge_clock_is_answered_not_fatal():
    room = Room("sv", max_document_bytes=MAX_DOCUMENT_BYTES)
    room.apply_update(author_update())
    answer = room.sync_step2(varint(1) + varint(1) + varint(2**63))
    framed = read_frame(answer)
    assert framed is not None and framed.kind == "step2"
    length, _ = read_varint(answer, 2)
    assert length == len(framed.payload)
