"""The codec and the room alone, fuzzed fast: no sockets, no database, no event loop.

`collab.session.Session` hands a frame to `collab.codec.parse` and then to the room;
`deliver` below does the same steps (size check, parse, apply, answer) so that tens of
thousands of frames cost seconds. What the room reports as changed (accepted changes and
the partial change of a refused update) is what the service stores and relays; a mirror
document built from those reports stands for the store and must stay identical to the
room, whatever the input. When a frame damages the room (an update that depends on
changes the room lacks, one yrs refuses after keeping part of it, a yrs panic), the room
must report nothing of it, and the test does what `RoomRegistry` does once the journal
has caught up: it replaces the room's Doc with the stored document, and goes on with
the room.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
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
from pycrdt import Doc, Text, XmlElement, XmlFragment

from tests.fuzz import stats
from tests.fuzz.frames import (
    MAX_AWARENESS_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_FRAME_BYTES,
    SCALE,
    HalfValid,
    Oracle,
    author_update,
    awareness_payload,
    browser_reads,
    frame_strategy,
    leaves_pending,
    presence_texts,
    read_frame,
    read_varint,
    same_document,
    seeded_frames,
    text_inside,
    update_pool,
    varint,
)

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


def apply_as_the_registry_does(room: Room, update: bytes, stored: Doc[Any]) -> None:
    """A client's update as `RoomRegistry.accept_update` handles it: what the room reports
    goes to `stored`, and a room the update damaged is rebuilt from `stored`."""
    try:
        change = room.apply_update(update)
    except BadUpdate as refused:
        change = refused.partial
    if change is not None:
        stored.apply_update(change)
    if room.damaged:
        room.replace_doc(stored.get_update())


@dataclass
class RoomCampaign(stats.Tally):
    """Frames against rooms; the room must always equal the mirror of what it reported."""

    def run(self, frames: list[Any]) -> None:
        pool = update_pool()
        for number, start in enumerate(range(0, len(frames), FRAMES_PER_ROOM)):
            self.room(
                frames[start : start + FRAMES_PER_ROOM], preload=(number * 29) % (len(pool) + 1)
            )

    def room(self, frames: list[Any], *, preload: int) -> None:
        """Send frames to a new room, then check that it is what it reported."""
        room = Room("fuzz", max_document_bytes=MAX_DOCUMENT_BYTES)
        stored: Doc[Any] = Doc()  # the mirror: what the room reported, as the store holds it
        for update in (author_update(), *update_pool()[:preload]):
            change = room.apply_update(update, from_client=False)
            if change is not None:  # some updates of the pool repeat what others hold
                stored.apply_update(change)
        room.size_bytes = len(room.doc.get_update())
        sent: list[bytes | str] = []
        try:
            if self.send(room, stored, frames, sent) and not self.agrees(room, stored):
                self.mismatches.append("the room holds changes it never reported (end of room)")
            state = room.doc.get_update()
            fresh: Doc[Any] = Doc()
            fresh.apply_update(state)  # what a joiner or the store would load
            assert same_document(state, fresh.get_update())
        except BaseException as error:
            # Outside apply_update nothing contains a yrs panic: in the service it would
            # reach the consumer (encoding a SyncStep2) or the journal (compaction).
            if type(error).__name__ != "PanicException":
                raise
            path = stats.save_finding("room-panic", sent[-1] if sent else b"")
            self.mismatches.append(
                f"yrs panicked reading the room after {len(sent)} frames (the last in "
                f"{path.name}, preload {preload}): {error}"
            )
        room.close()

    def send(
        self, room: Room, stored: Doc[Any], frames: list[Any], sent: list[bytes | str]
    ) -> bool:
        """The frames, one by one, judged by the oracle; False when the room diverged."""
        peer = Peer()
        room.add_peer(peer)
        oracle = Oracle()
        for index, frame in enumerate(frames):
            if isinstance(frame, HalfValid):
                frame = frame.frame(room.doc.get_state())
            sent.append(frame)
            verdict = oracle.verdict(
                frame, room_state=room.doc.get_update, size_bytes=room.size_bytes
            )
            self.count(verdict)
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
                self.check_replies(frame, replies)
            if code is not None:
                self.refuse(code)
            if code != verdict.code:
                path = stats.save_finding("room-code", frame)
                self.mismatches.append(
                    f"{verdict.kind} frame {path.name}: {code}, expected {verdict.code}"
                )
            if room.damaged != verdict.damages:
                path = stats.save_finding("room-damaged", frame)
                self.mismatches.append(
                    f"{verdict.kind} frame {path.name}: damaged is {room.damaged}, expected "
                    f"{verdict.damages} ({verdict})"
                )
            if change is not None:
                if verdict.damages:
                    path = stats.save_finding("room-kept", frame)
                    self.mismatches.append(
                        f"{verdict.kind} frame {path.name} damaged the room, yet the room "
                        "reported a change to store"
                    )
                stored.apply_update(change)
                room.size_bytes += len(change)  # what the journal's commit would report
                if leaves_pending(stored, change):
                    # The store, every peer and every other process would hold a deletion
                    # of items nobody has yet (README, bug 7).
                    path = stats.save_finding("room-change", frame)
                    self.mismatches.append(
                        f"{verdict.kind} frame {path.name}: the change it reported waits"
                    )
            if room.damaged:
                self.rebuild(room, stored, frame)
                oracle.forget()
            elif change is not None and not self.encodes(room, frame):
                return False
            if index % 250 == 0 and not self.agrees(room, stored):
                path = stats.save_finding("room-diverged", frame)
                self.mismatches.append(f"the room holds changes it never reported ({path.name})")
                return False
        return True

    def agrees(self, room: Room, stored: Doc[Any]) -> bool:
        """Whether the room equals the store."""
        return same_document(room.doc.get_update(), stored.get_update())

    def encodes(self, room: Room, frame: bytes | str) -> bool:
        """Whether yrs can still encode the room after it took `frame` (README, bug 9)."""
        try:
            room.doc.get_update()
        except BaseException as error:
            if type(error).__name__ != "PanicException":
                raise
            path = stats.save_finding("room-unencodable", frame)
            self.mismatches.append(f"after {path.name} yrs panics encoding the room: {error}")
            return False
        return True

    def rebuild(self, room: Room, stored: Doc[Any], frame: bytes | str) -> None:
        """What the registry does with a damaged room once the journal has caught up."""
        self.rebuilds += 1
        room.replace_doc(stored.get_update())
        if room.damaged or not same_document(room.doc.get_update(), stored.get_update()):
            path = stats.save_finding("room-rebuilt", frame)
            self.mismatches.append(
                f"after {path.name} the rebuilt room is not the stored document "
                f"(damaged: {room.damaged})"
            )

    def check_replies(self, frame: bytes | str, replies: list[bytes]) -> None:
        """Whatever the room answers must decode, and its presence must be strict JSON."""
        for reply in replies:
            answer = read_frame(reply)
            assert answer is not None, reply[:40]
            if answer.kind == "step2":
                Doc().apply_update(answer.payload)
            elif answer.kind == "awareness" and not all(
                browser_reads(text) for text in presence_texts(answer.payload)
            ):
                path = stats.save_finding("room-presence", frame)
                self.mismatches.append(f"after {path.name} the room answered with {reply[:80]!r}")


@pytest.mark.timeout(300, method="thread")
def test_codec_and_room_refuse_exactly_what_the_oracle_refuses_and_report_every_change():
    campaign = RoomCampaign()
    campaign.run(seeded_frames(seed=7, count=int(100_000 * SCALE)))
    stats.record("in-process frames (codec + room)", campaign.sent)
    stats.record("in-process rooms rebuilt from the store (codec + room)", campaign.rebuilds)
    stats.record("in-process updates that wait, dropped (codec + room)", campaign.waits)
    stats.record("in-process yrs panics (codec + room)", campaign.panics)
    report = (
        f"{campaign.sent} frames, refused {campaign.refused}, {campaign.partial} partial, "
        f"{campaign.pending} left something outside the document ({campaign.waits} of "
        f"them waiting, dropped), {campaign.panics} panics, {campaign.rebuilds} rebuilds "
        f"from the store, {campaign.overclaims} claiming more clients than bytes"
    )
    print(report)
    assert not campaign.mismatches, "\n".join(campaign.mismatches[:20])
    assert campaign.sent >= 95_000 * SCALE, report
    assert campaign.refused.get(4413, 0) > 0, report
    # Every kind of input the fixes of bugs 1-3 deal with must occur.
    assert campaign.waits > 0 and campaign.pending > campaign.waits, report
    assert campaign.panics > 0 and campaign.overclaims > 0 and campaign.rebuilds > 0, report


# Hypothesis: the codec is a total function over bytes ------------------------------------------


def properties(examples: int) -> settings:
    """Hypothesis settings of the properties: `examples` (scaled), the same ones every run."""
    return settings(
        max_examples=int(examples * SCALE) or 1,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@properties(2000)
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


@properties(600)
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


def test_presence_the_room_repeats_is_strict_json_even_for_numbers_beyond_a_double():
    # tests/fuzz/README.md, known bug 6 (fixed).
    room = Room("presence", max_document_bytes=MAX_DOCUMENT_BYTES)
    peer = Peer()
    room.add_peer(peer)
    # Strict JSON (JSON.parse reads it as Infinity), but Python's json reads it as inf
    # and would write it back as Infinity, which JSON.parse refuses.
    state = '{"cursor":1e999}'
    with contextlib.suppress(BadFrame):  # refusing it is one way to keep the promise
        room.apply_awareness(awareness_payload([(7, 1, state)]), peer)
    snapshot = room.awareness_snapshot()  # what every joiner and QueryAwareness gets
    local = room.local_awareness()  # what answers another process's query
    framed = read_frame(snapshot) if snapshot is not None else None
    for payload in (framed.payload if framed else None, local):
        assert payload is None or all(browser_reads(t) for t in presence_texts(payload)), payload


def test_an_update_cannot_delete_what_a_client_writes_later():
    # tests/fuzz/README.md, known bug 7 (fixed).
    author = Doc(client_id=5)
    fragment = author.get("xml", type=XmlFragment)
    fragment.children.append(XmlElement("p"))  # item 5:0...
    del fragment.children[0]  # ...deleted
    document = author.get_update()
    room = Room("waits", max_document_bytes=MAX_DOCUMENT_BYTES)
    room.apply_update(document, from_client=False)
    stored: Doc[Any] = Doc()
    stored.apply_update(document)
    # Client 5 at clock 10 (1-9 missing), inside the deleted item: it waits, and yrs
    # reports the deletion of item 5:10 as the change it made.
    apply_as_the_registry_does(room, text_inside(5, 10, parent=(5, 0)), stored)
    before = author.get_state()
    author.get("text", type=Text).insert(0, "abcdefghij")  # client 5's clocks 1-10
    apply_as_the_registry_does(room, author.get_update(before), stored)
    assert str(stored.get("text", type=Text)) == "abcdefghij"
    assert str(room.doc.get("text", type=Text)) == "abcdefghij"


def test_a_room_that_took_an_update_can_still_be_encoded():
    # tests/fuzz/README.md, known bug 9 (fixed).
    room = Room("encode", max_document_bytes=MAX_DOCUMENT_BYTES)
    room.apply_update(author_update(), from_client=False)
    stored: Doc[Any] = Doc()
    stored.apply_update(author_update())
    # One struct of client 0 at clock 1 (clock 0 missing): a GC of length 0. It waits.
    apply_as_the_registry_does(room, b"\x01\x01\x00\x01\x00\x00\x00", stored)
    try:
        room.sync_step2(b"\x00")  # what every joiner gets
    except BaseException as error:
        if type(error).__name__ != "PanicException":
            raise
        pytest.fail(f"yrs panics encoding the room: {error}")


def test_what_waits_in_a_room_is_not_shown_to_joiners():
    # tests/fuzz/README.md, known bug 10 (fixed).
    room = Room("shows", max_document_bytes=MAX_DOCUMENT_BYTES)
    room.apply_update(author_update(), from_client=False)  # "hello", client 1 clocks 0-4
    stored: Doc[Any] = Doc()
    stored.apply_update(author_update())
    # One struct of client 127 at clock 1 (clock 0 missing): "X" after the author's "o".
    update = varint(1) + varint(1) + varint(127) + varint(1)
    update += b"\x84" + varint(1) + varint(4) + varint(1) + b"X" + b"\x00"
    apply_as_the_registry_does(room, update, stored)  # what is stored and relayed
    joiner: Doc[Any] = Doc()
    joiner.apply_update(room.doc.get_update())  # what a joiner's SyncStep2 carries
    assert str(joiner.get("text", type=Text)) == str(stored.get("text", type=Text)) == "hello"
