"""The in-process room: pure document/awareness logic, no I/O."""

from __future__ import annotations

import pytest
from collab.codec import AwarenessUpdate, SyncStep1, SyncStep2, parse
from collab.errors import BadFrame, BadUpdate, TooLarge, UpdateWaits
from collab.room import Room, SeqTracker
from pycrdt import Awareness, Doc, Encoder, Text, merge_updates

EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE_VECTOR = b"\x00"


class FakePeer:
    """A local connection that records what the room sends it."""

    def __init__(self, name: str = "peer") -> None:
        self.name = name
        self.awareness_ids: set[int] = set()
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def __repr__(self) -> str:
        return f"FakePeer({self.name})"


class Editor:
    """A pycrdt client document that records every update it produces."""

    def __init__(self, client_id: int) -> None:
        self.doc = Doc(client_id=client_id)
        self.text = self.doc.get("text", type=Text)
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def type(self, content: str) -> bytes:
        self.text += content
        return self.updates[-1]

    def delete(self, start: int, stop: int) -> bytes:
        del self.text[start:stop]
        return self.updates[-1]


def make_room(max_document_bytes: int = 1_000_000) -> Room:
    return Room("doc", max_document_bytes=max_document_bytes)


def text_of(*updates: bytes) -> str:
    doc = Doc()
    text = doc.get("text", type=Text)
    for update in updates:
        doc.apply_update(update)
    return str(text)


def room_text(room: Room) -> str:
    return str(room.doc.get("text", type=Text))


def room_fingerprint(room: Room) -> tuple[bytes, bytes]:
    return room.doc.get_state(), room.doc.get_update()


def presence(client_id: int, state: dict | None) -> bytes:
    """An awareness payload from a client holding `state` (None: the client left)."""
    awareness = Awareness(Doc(client_id=client_id))
    if state is None:
        awareness.set_local_state({})
        awareness.set_local_state(None)
    else:
        awareness.set_local_state(state)
    return awareness.encode_awareness_update([client_id])


# apply_update ------------------------------------------------------------------------


def test_apply_update_returns_the_change_it_made():
    editor = Editor(client_id=1)
    room = make_room()

    change = room.apply_update(editor.type("hello"))

    assert change is not None
    assert text_of(change) == "hello"
    assert room_text(room) == "hello"


def test_apply_update_returns_none_for_an_update_already_applied():
    editor = Editor(client_id=1)
    update = editor.type("hello")
    room = make_room()
    room.apply_update(update)
    before = room_fingerprint(room)

    assert room.apply_update(update) is None
    assert room_fingerprint(room) == before


def test_apply_update_returns_none_for_an_already_applied_deletion():
    editor = Editor(client_id=1)
    room = make_room()
    room.apply_update(editor.type("hello"))
    deletion = editor.delete(0, 2)
    assert room.apply_update(deletion) is not None

    assert room.apply_update(deletion) is None
    assert room_text(room) == "llo"


def test_apply_update_returns_none_for_the_empty_update():
    room = make_room()

    assert room.apply_update(EMPTY_UPDATE) is None
    assert room_fingerprint(room) == (EMPTY_STATE_VECTOR, EMPTY_UPDATE)


def test_empty_update_is_not_counted_against_the_size_limit():
    room = make_room(max_document_bytes=1)
    room.size_bytes = 1

    assert room.apply_update(EMPTY_UPDATE) is None


def test_change_of_an_update_overlapping_known_content_holds_only_the_new_part():
    editor = Editor(client_id=1)
    first = editor.type("hello")
    editor.type(" world")
    room = make_room()
    room.apply_update(first)

    change = room.apply_update(editor.doc.get_update())

    assert change is not None
    assert text_of(first, change) == "hello world"
    # Only the new part: on its own, it lacks the insertion it builds on.
    assert text_of(change) == ""


# Durable updates (from_client=False) come from the log or from other processes, whose
# messages can cross: one may arrive before the update it depends on, which is on its way.


def test_durable_update_with_missing_dependency_is_held_back():
    editor = Editor(client_id=1)
    editor.type("hello")
    second = editor.type(" world")
    room = make_room()

    assert room.apply_update(second, from_client=False) is None
    assert room_text(room) == ""
    assert not room.damaged


def test_durable_update_with_missing_dependency_is_released_with_its_dependency():
    editor = Editor(client_id=1)
    first = editor.type("hello")
    second = editor.type(" world")
    room = make_room()
    assert room.apply_update(second, from_client=False) is None

    change = room.apply_update(first, from_client=False)

    assert change is not None
    assert text_of(change) == "hello world"
    assert room_text(room) == "hello world"


def test_durable_deletion_with_missing_dependency_is_released_with_its_dependency():
    editor = Editor(client_id=1)
    insertion = editor.type("hello")
    deletion = editor.delete(0, 2)
    room = make_room()
    assert room.apply_update(deletion, from_client=False) is None

    change = room.apply_update(insertion, from_client=False)

    assert change is not None
    assert text_of(change) == "llo"
    assert room_text(room) == "llo"


# A client's update must apply whole: what yrs keeps waiting inside the Doc is neither
# stored nor relayed, escapes every limit, and yrs does not keep it reliably. Honest
# clients do send such updates (typed just after a reconnect, before their sync), so the
# registry drops them by rebuilding the room and asks the client for what is missing.


def test_client_update_with_missing_dependency_raises_update_waits_and_damages_the_room():
    editor = Editor(client_id=1)
    editor.type("hello")
    second = editor.type(" world")
    room = make_room()

    with pytest.raises(UpdateWaits, match="depends on changes") as refused:
        room.apply_update(second)

    assert refused.value.partial is None
    assert room.damaged


def test_client_deletion_of_items_the_room_lacks_raises_update_waits():
    editor = Editor(client_id=1)
    editor.type("hello")
    deletion = editor.delete(0, 2)
    room = make_room()

    with pytest.raises(UpdateWaits):
        room.apply_update(deletion)

    assert room.damaged


def test_client_update_that_only_partly_waits_keeps_nothing():
    alice, bob = Editor(client_id=1), Editor(client_id=2)
    alice.type("hello")
    late = alice.type("!")  # depends on "hello", which the room never gets
    room = make_room()

    with pytest.raises(UpdateWaits) as refused:
        room.apply_update(merge_updates(bob.type("bob"), late))

    assert refused.value.partial is None  # nothing stored: the rebuild drops "bob" too
    assert room.damaged


def test_client_deletion_of_known_items_and_repeated_updates_do_not_damage_the_room():
    editor = Editor(client_id=1)
    insertion = editor.type("hello")
    room = make_room()
    room.apply_update(insertion)

    room.apply_update(editor.delete(0, 2))
    room.apply_update(insertion)

    assert room_text(room) == "llo"
    assert not room.damaged


def test_refused_update_that_left_a_struct_waiting_damages_the_room():
    room = make_room()
    room.apply_update(Editor(client_id=1).type("hello"))

    with pytest.raises(BadUpdate, match="not a valid Yjs update") as refused:
        room.apply_update(_PARKED_THEN_REFUSED_UPDATE)

    assert refused.value.partial is None
    assert room.damaged


def test_replace_doc_drops_what_waited_and_keeps_peers_presence_and_client_id():
    editor = Editor(client_id=1)
    first = editor.type("hello")
    second = editor.type(" world")
    room = make_room()
    peer = FakePeer()
    room.add_peer(peer)
    presence = Awareness(Doc(client_id=11))
    presence.set_local_state({"name": "ada"})
    room.apply_awareness(presence.encode_awareness_update([11]), peer)
    client_id = room.doc.client_id
    with pytest.raises(UpdateWaits):
        room.apply_update(second)

    room.replace_doc(None)
    change = room.apply_update(first)

    assert not room.damaged
    assert change is not None and text_of(change) == "hello"
    assert room_text(room) == "hello"  # the old Doc would release " world" here
    assert room.peers == {peer} and 11 in room.awareness.states
    assert room.doc.client_id == client_id


def test_replace_doc_starts_from_the_stored_document_and_observes_the_new_doc():
    editor = Editor(client_id=1)
    stored = editor.type("hello")
    room = make_room()
    room.apply_update(editor.type("?"), from_client=False)  # held back: clock 5 missing
    full_frame = room.sync_step2(EMPTY_STATE_VECTOR)

    room.replace_doc(stored)

    assert room_text(room) == "hello"
    assert room.sync_step2(EMPTY_STATE_VECTOR) != full_frame
    other = Editor(client_id=2)
    other.doc.apply_update(stored)
    change = room.apply_update(other.type("!"))
    assert change is not None and text_of(stored, change) == "hello!"


def test_peer_receiving_only_the_returned_changes_converges_with_the_room():
    alice, bob = Editor(client_id=1), Editor(client_id=2)
    a1 = alice.type("hello")
    bob.doc.apply_update(a1)
    b1 = bob.type(" bob")
    a2 = alice.type(" alice")
    a3 = alice.delete(0, 1)
    room = make_room()
    updates = [a3, b1, a2, a1, a1, b1]
    changes = [room.apply_update(update, from_client=False) for update in updates]

    assert [change is None for change in changes] == [True, True, True, False, True, True]
    observer = Doc()
    for change in changes:
        if change is not None:
            observer.apply_update(change)
    assert str(observer.get("text", type=Text)) == room_text(room)
    alice.doc.apply_update(b1)
    assert room_text(room) == str(alice.text)


# corrupt updates -----------------------------------------------------------------------

# A hand-built update from client 1 at clock 5 (right after "hello", clocks 0-4):
# its first struct inserts "!" into the root text, its second claims the character
# item 1#1 as its parent, which Yjs refuses ("block parent must be ... shared ref type").
# The refusal comes after the first struct, which is valid on its own.
_HALF_VALID_UPDATE = bytes.fromhex(
    "01 02 01 05"  # one client, two structs, client 1, starting at clock 5
    " 04 01 04 74657874 01 21"  # string item, parent: root "text", content "!"
    " 08 00 01 01 01 7d 01"  # any item, parent: id 1#1 (a character), content [1]
    " 00"  # empty delete set
)


def _second_edit_of_client_1() -> bytes:
    editor = Editor(client_id=1)
    editor.type("hello")
    return editor.type(" world")


_TRUNCATED_UPDATE = _second_edit_of_client_1()[:-3]

# The same refused struct behind a valid one, both sent ahead of a clock gap: they
# start at clock 6 while clock 5 is still missing. The engine has already stored the
# first struct when it fails on the second.
_PARKED_THEN_REFUSED_UPDATE = bytes.fromhex(
    "01 02 01 06"  # one client, two structs, client 1, starting at clock 6
    " 27 01 03 6d6170 01 62 00"  # array type item, parent: root "map", key "b"
    " 08 00 01 01 01 7d 01"  # any item, parent: id 1#1 (a character), content [1]
    " 00"  # empty delete set
)


@pytest.mark.parametrize(
    "update",
    [
        pytest.param(b"\x01", id="truncated header"),
        pytest.param(b"\xff\xff\xff", id="garbage varints"),
        pytest.param(b"not a yjs update", id="text"),
        pytest.param(b"\x01\x01\x00\x00", id="struct count without structs"),
        pytest.param(b"\xe5\x88\xb9\xe3\x01\x00\x02", id="huge client count"),
        pytest.param(_TRUNCATED_UPDATE, id="truncated valid update"),
    ],
)
def test_corrupt_update_raises_bad_update_and_leaves_the_room_unchanged(update):
    editor = Editor(client_id=1)
    hello = editor.type("hello")
    room = make_room()
    room.apply_update(hello)
    full_state = room.sync_step2(EMPTY_STATE_VECTOR)
    before = room_fingerprint(room)

    with pytest.raises(BadUpdate) as refused:
        room.apply_update(update)

    assert refused.value.partial is None
    assert room_fingerprint(room) == before
    assert room_text(room) == "hello"
    assert room.sync_step2(EMPTY_STATE_VECTOR) == full_state


def test_half_valid_update_keeps_nothing_and_damages_the_room():
    # yrs cannot roll back: the struct integrated before the failure stays in the Doc,
    # next to the refused one it may keep waiting. Nothing of it may be stored: the room
    # is rebuilt from the store without it.
    editor = Editor(client_id=1)
    room = make_room()
    room.apply_update(editor.type("hello"))

    with pytest.raises(BadUpdate) as refused:
        room.apply_update(_HALF_VALID_UPDATE)

    assert refused.value.partial is None
    assert room.damaged


def test_parked_part_of_a_refused_update_is_released_later_like_any_parked_struct():
    # A writer can always forge structs of another client id (Yjs has no ownership of
    # client ids); a refused update's parked part behaves like such a forgery. What
    # matters is that everything the room holds is released for storage and relay.
    editor = Editor(client_id=1)
    room = make_room()
    released = Doc()
    first = room.apply_update(editor.type("hello"))
    assert first is not None
    released.apply_update(first)
    with pytest.raises(BadUpdate) as refused:
        room.apply_update(_PARKED_THEN_REFUSED_UPDATE, from_client=False)
    assert refused.value.partial is None  # parked, not integrated yet

    for update in (editor.type("!"), editor.type("?")):
        change = room.apply_update(update)
        if change is not None:
            released.apply_update(change)

    assert released.get_state() == room.doc.get_state()
    assert str(released.get("text", type=Text)) == room_text(room)


def test_room_keeps_working_after_a_corrupt_update():
    editor = Editor(client_id=1)
    room = make_room()
    room.apply_update(editor.type("hello"))
    with pytest.raises(BadUpdate):
        room.apply_update(b"garbage")

    change = room.apply_update(editor.type(" world"))

    assert change is not None
    assert room_text(room) == "hello world"


# size limit --------------------------------------------------------------------------


def test_update_above_the_document_size_limit_raises_too_large():
    update = Editor(client_id=1).type("x" * 100)
    room = make_room(max_document_bytes=len(update) - 1)

    with pytest.raises(TooLarge):
        room.apply_update(update)

    assert room_fingerprint(room) == (EMPTY_STATE_VECTOR, EMPTY_UPDATE)


def test_size_limit_counts_the_bytes_already_in_the_document():
    update = Editor(client_id=1).type("x" * 100)
    room = make_room(max_document_bytes=1000)
    room.size_bytes = 1000 - len(update) + 1

    with pytest.raises(TooLarge):
        room.apply_update(update)

    room.size_bytes = 1000 - len(update)
    assert room.apply_update(update) is not None


def test_update_exactly_at_the_size_limit_is_accepted():
    update = Editor(client_id=1).type("x" * 100)
    room = make_room(max_document_bytes=len(update))

    assert room.apply_update(update) is not None


def test_limit_false_bypasses_the_size_limit():
    update = Editor(client_id=1).type("x" * 100)
    room = make_room(max_document_bytes=1)
    room.size_bytes = 10_000

    change = room.apply_update(update, from_client=False)

    assert change is not None
    assert room_text(room) == "x" * 100


# sync_step2 and greeting ---------------------------------------------------------------


def test_sync_step2_answers_an_empty_state_vector_with_the_whole_document():
    editor = Editor(client_id=1)
    room = make_room()
    room.apply_update(editor.type("hello"))
    room.apply_update(editor.type(" world"))

    message = parse(room.sync_step2(EMPTY_STATE_VECTOR))

    assert isinstance(message, SyncStep2)
    assert text_of(message.update) == "hello world"


def test_sync_step2_answers_a_partial_state_vector_with_what_is_missing():
    alice, bob = Editor(client_id=1), Editor(client_id=2)
    room = make_room()
    first = alice.type("hello")
    room.apply_update(first)
    bob.doc.apply_update(first)
    room.apply_update(alice.type(" world"))

    message = parse(room.sync_step2(bob.doc.get_state()))

    assert isinstance(message, SyncStep2)
    bob.doc.apply_update(message.update)
    assert str(bob.text) == room_text(room) == "hello world"
    # The answer leaves out what bob already had.
    assert text_of(message.update) == ""


def test_sync_step2_answers_an_up_to_date_state_vector_with_nothing_new():
    editor = Editor(client_id=1)
    room = make_room()
    room.apply_update(editor.type("hello"))

    message = parse(room.sync_step2(editor.doc.get_state()))

    assert isinstance(message, SyncStep2)
    editor.doc.apply_update(message.update)
    assert str(editor.text) == "hello"
    assert room.doc.get_state() == editor.doc.get_state()


def test_sync_step2_of_an_empty_room_is_an_empty_update():
    assert parse(make_room().sync_step2(EMPTY_STATE_VECTOR)) == SyncStep2(EMPTY_UPDATE)


@pytest.mark.parametrize("state_vector", [b"\xff", b"\x01", b"\x02\x01\x01", b"garbage"])
def test_sync_step2_refuses_a_state_vector_that_does_not_decode(state_vector):
    with pytest.raises(BadFrame):
        make_room().sync_step2(state_vector)


def test_full_state_frame_is_reused_while_nothing_changes():
    editor = Editor(client_id=1)
    room = make_room()
    update = editor.type("hello")
    room.apply_update(update)
    frame = room.sync_step2(EMPTY_STATE_VECTOR)

    room.apply_update(update)
    room.apply_update(EMPTY_UPDATE)

    assert room.sync_step2(EMPTY_STATE_VECTOR) is frame


def test_full_state_frame_is_invalidated_after_a_change():
    editor = Editor(client_id=1)
    room = make_room()
    room.apply_update(editor.type("hello"))
    before = parse(room.sync_step2(EMPTY_STATE_VECTOR))

    room.apply_update(editor.type(" world"))
    after = parse(room.sync_step2(EMPTY_STATE_VECTOR))

    assert isinstance(before, SyncStep2)
    assert isinstance(after, SyncStep2)
    assert text_of(before.update) == "hello"
    assert text_of(after.update) == "hello world"


def test_full_state_frame_is_invalidated_when_a_held_update_is_released():
    editor = Editor(client_id=1)
    first = editor.type("hello")
    second = editor.type(" world")
    room = make_room()
    room.apply_update(second, from_client=False)
    assert parse(room.sync_step2(EMPTY_STATE_VECTOR)) == SyncStep2(EMPTY_UPDATE)

    room.apply_update(first, from_client=False)
    message = parse(room.sync_step2(EMPTY_STATE_VECTOR))

    assert isinstance(message, SyncStep2)
    assert text_of(message.update) == "hello world"


def test_greeting_of_an_empty_room_is_only_sync_step1():
    assert [parse(frame) for frame in make_room().greeting()] == [SyncStep1(EMPTY_STATE_VECTOR)]


def test_greeting_holds_sync_step1_with_the_room_state_vector():
    room = make_room()
    room.apply_update(Editor(client_id=1).type("hello"))

    frames = room.greeting()

    assert [parse(frame) for frame in frames] == [SyncStep1(room.doc.get_state())]


def test_greeting_holds_awareness_of_everyone_present():
    room = make_room()
    room.apply_update(Editor(client_id=1).type("hello"))
    room.apply_awareness(presence(11, {"name": "ada"}), FakePeer("a"))
    room.apply_awareness(presence(12, {"name": "bob"}), FakePeer("b"))

    frames = room.greeting()

    assert len(frames) == 2
    assert parse(frames[0]) == SyncStep1(room.doc.get_state())
    message = parse(frames[1])
    assert isinstance(message, AwarenessUpdate)
    newcomer = Awareness(Doc(client_id=99))
    newcomer.apply_awareness_update(message.payload, "remote")
    assert newcomer.states[11] == {"name": "ada"}
    assert newcomer.states[12] == {"name": "bob"}


# awareness ---------------------------------------------------------------------------


def test_server_awareness_client_id_is_never_a_state():
    room = make_room()
    server_id = room.awareness.client_id
    assert room.awareness.states == {}
    assert room.awareness_snapshot() is None

    peer = FakePeer()
    room.add_peer(peer)
    room.apply_awareness(presence(11, {"name": "ada"}), peer)
    room.greeting()
    room.apply_update(Editor(client_id=1).type("hello"))

    assert set(room.awareness.states) == {11}
    snapshot = room.awareness_snapshot()
    assert snapshot is not None
    message = parse(snapshot)
    assert isinstance(message, AwarenessUpdate)
    observer = Awareness(Doc(client_id=99))
    observer.set_local_state(None)
    observer.apply_awareness_update(message.payload, "remote")
    assert server_id not in observer.states
    assert set(observer.states) == {11}

    room.remove_peer(peer)
    assert server_id not in room.awareness.states
    assert room.awareness_snapshot() is None


def test_apply_awareness_records_the_client_ids_a_peer_speaks_for():
    room = make_room()
    alice, bob = FakePeer("alice"), FakePeer("bob")
    room.add_peer(alice)
    room.add_peer(bob)
    two_tabs = Awareness(Doc(client_id=21))
    two_tabs.set_local_state({"tab": 1})
    other = Awareness(Doc(client_id=22))
    other.set_local_state({"tab": 2})
    other.apply_awareness_update(two_tabs.encode_awareness_update([21]), "remote")

    room.apply_awareness(presence(11, {"name": "alice"}), alice)
    room.apply_awareness(other.encode_awareness_update([21, 22]), bob)

    assert alice.awareness_ids == {11}
    assert bob.awareness_ids == {21, 22}
    assert set(room.awareness.states) == {11, 21, 22}


def test_apply_awareness_from_another_process_records_no_owner():
    room = make_room()
    peer = FakePeer()
    room.add_peer(peer)

    room.apply_awareness(presence(11, {"name": "remote"}), None)

    assert peer.awareness_ids == set()
    assert room.awareness.states[11] == {"name": "remote"}


def test_peer_announcing_its_departure_no_longer_owns_its_client_id():
    room = make_room()
    peer = FakePeer()
    room.add_peer(peer)
    awareness = Awareness(Doc(client_id=11))
    awareness.set_local_state({"name": "ada"})
    room.apply_awareness(awareness.encode_awareness_update([11]), peer)
    assert peer.awareness_ids == {11}

    awareness.set_local_state(None)
    room.apply_awareness(awareness.encode_awareness_update([11]), peer)

    assert peer.awareness_ids == set()
    assert 11 not in room.awareness.states


@pytest.mark.parametrize(
    "payload",
    [b"\x01", b"\x01\x0b\x01\x05{oops", b"\x01\x0b\x01\x03[1,", b"\x05"],
    ids=["truncated", "bad json", "cut json", "count without entries"],
)
def test_awareness_update_that_does_not_decode_raises_bad_frame(payload):
    room = make_room()
    peer = FakePeer()

    with pytest.raises(BadFrame):
        room.apply_awareness(payload, peer)


def _presence_payload(*states: str) -> bytes:
    """An awareness payload with the given JSON texts as states of clients 21, 22, ..."""
    encoder = Encoder()
    encoder.write_var_uint(len(states))
    for offset, state in enumerate(states):
        encoder.write_var_uint(21 + offset)
        encoder.write_var_uint(1)
        encoder.write_var_string(state)
    return encoder.to_bytes()


@pytest.mark.parametrize(
    "state",
    [
        '{"cursor":NaN}',
        '{"x":Infinity}',
        '{"x":[-Infinity]}',
        '{"x":1e999}',  # strict JSON, but Python reads inf and would write Infinity back
        "[1,2]",
        "7",
        '"ada"',
        "true",
    ],
)
def test_presence_a_browser_cannot_parse_or_that_is_not_an_object_is_refused_whole(state):
    # JavaScript's JSON.parse throws on NaN and Infinity, which Python's json accepts.
    room = make_room()
    peer = FakePeer()

    with pytest.raises(BadFrame, match=r"JSON|double"):
        room.apply_awareness(_presence_payload('{"name":"ada"}', state), peer)

    assert room.awareness.states == {}
    assert peer.awareness_ids == set()


@pytest.mark.parametrize("state", ['{"name":"ada","n":1.5e3}', "{}", "null", ""])
def test_presence_objects_and_removals_are_accepted(state):
    room = make_room()
    peer = FakePeer()

    room.apply_awareness(_presence_payload(state), peer)

    present = state not in ("null", "")
    assert (21 in room.awareness.states) is present


def test_local_awareness_holds_only_the_states_of_this_process_peers():
    room = make_room()
    local = FakePeer("local")
    room.add_peer(local)
    room.apply_awareness(presence(11, {"name": "here"}), local)
    room.apply_awareness(presence(12, {"name": "elsewhere"}), None)

    payload = room.local_awareness()

    assert payload is not None
    observer = Awareness(Doc(client_id=99))
    observer.set_local_state(None)
    observer.apply_awareness_update(payload, "remote")
    assert observer.states == {11: {"name": "here"}}


def test_local_awareness_is_none_without_local_states():
    room = make_room()
    room.add_peer(FakePeer())
    room.apply_awareness(presence(12, {"name": "elsewhere"}), None)

    assert room.local_awareness() is None


def test_remove_peer_returns_a_payload_that_removes_its_states_elsewhere():
    room = make_room()
    leaving, staying = FakePeer("leaving"), FakePeer("staying")
    room.add_peer(leaving)
    room.add_peer(staying)
    ada = presence(11, {"name": "ada"})
    bob = presence(12, {"name": "bob"})
    room.apply_awareness(ada, leaving)
    room.apply_awareness(bob, staying)
    elsewhere = Awareness(Doc(client_id=99))
    elsewhere.apply_awareness_update(ada, "remote")
    elsewhere.apply_awareness_update(bob, "remote")
    assert {11, 12} <= set(elsewhere.states)

    payload = room.remove_peer(leaving)

    assert payload is not None
    elsewhere.apply_awareness_update(payload, "remote")
    assert 11 not in elsewhere.states
    assert elsewhere.states[12] == {"name": "bob"}
    assert set(room.awareness.states) == {12}
    assert leaving.awareness_ids == set()


def test_remove_peer_broadcasts_the_removal_to_remaining_peers_only():
    room = make_room()
    leaving, first, second = FakePeer("leaving"), FakePeer("first"), FakePeer("second")
    for peer in (leaving, first, second):
        room.add_peer(peer)
    room.apply_awareness(presence(11, {"name": "ada"}), leaving)

    payload = room.remove_peer(leaving)

    assert payload is not None
    assert leaving.frames == []
    assert len(first.frames) == 1
    assert parse(first.frames[0]) == AwarenessUpdate(payload)
    assert second.frames == first.frames
    assert leaving not in room.peers


def test_remove_peer_without_awareness_returns_none_and_sends_nothing():
    room = make_room()
    leaving, staying = FakePeer("leaving"), FakePeer("staying")
    room.add_peer(leaving)
    room.add_peer(staying)

    assert room.remove_peer(leaving) is None
    assert staying.frames == []
    assert room.peers == {staying}


def test_remove_peer_whose_states_were_already_removed_sends_nothing():
    room = make_room()
    leaving, staying = FakePeer("leaving"), FakePeer("staying")
    room.add_peer(leaving)
    room.add_peer(staying)
    room.apply_awareness(presence(11, {"name": "ada"}), leaving)
    room.forget_awareness({11})

    assert room.remove_peer(leaving) is None
    assert staying.frames == []


# broadcast ---------------------------------------------------------------------------


def test_broadcast_sends_the_identical_frame_to_every_peer_but_the_excluded_one():
    room = make_room()
    sender, *others = peers = [FakePeer(f"p{index}") for index in range(4)]
    for peer in peers:
        room.add_peer(peer)
    frame = b"\x00\x02\x02\x00\x00"

    room.broadcast(frame, exclude=sender)

    assert sender.frames == []
    for peer in others:
        assert len(peer.frames) == 1
        assert peer.frames[0] is frame


def test_broadcast_without_exclusion_reaches_every_peer():
    room = make_room()
    peers = [FakePeer(f"p{index}") for index in range(3)]
    for peer in peers:
        room.add_peer(peer)
    frame = b"\x01\x01\x00"

    room.broadcast(frame)

    assert all(peer.frames == [frame] and peer.frames[0] is frame for peer in peers)


def test_broadcast_skips_removed_peers():
    room = make_room()
    gone, kept = FakePeer("gone"), FakePeer("kept")
    room.add_peer(gone)
    room.add_peer(kept)
    room.remove_peer(gone)

    room.broadcast(b"\x01\x01\x00")

    assert gone.frames == []
    assert kept.frames == [b"\x01\x01\x00"]


# SeqTracker --------------------------------------------------------------------------


def test_seq_tracker_starts_at_its_initial_watermark():
    assert SeqTracker().watermark == 0
    assert SeqTracker(41).watermark == 41


def test_contiguous_notes_advance_the_watermark():
    tracker = SeqTracker()

    tracker.note(1, 1)
    assert tracker.watermark == 1
    tracker.note(2, 5)
    assert tracker.watermark == 5
    tracker.note(6, 6)
    assert tracker.watermark == 6


def test_out_of_order_note_is_held_until_the_gap_fills():
    tracker = SeqTracker(3)

    tracker.note(6, 8)
    assert tracker.watermark == 3
    tracker.note(4, 5)
    assert tracker.watermark == 8


def test_several_held_notes_are_absorbed_in_a_chain():
    tracker = SeqTracker()
    tracker.note(9, 9)
    tracker.note(5, 6)
    tracker.note(7, 8)
    tracker.note(3, 4)
    assert tracker.watermark == 0

    tracker.note(1, 2)

    assert tracker.watermark == 9


def test_held_note_beyond_a_remaining_gap_stays_held():
    tracker = SeqTracker()
    tracker.note(3, 3)
    tracker.note(6, 6)

    tracker.note(1, 2)
    assert tracker.watermark == 3

    tracker.note(4, 5)
    assert tracker.watermark == 6


def test_stale_notes_are_ignored():
    tracker = SeqTracker(10)

    tracker.note(3, 7)
    tracker.note(10, 10)

    assert tracker.watermark == 10
    tracker.note(11, 11)
    assert tracker.watermark == 11


def test_overlapping_note_advances_to_its_end():
    tracker = SeqTracker(5)

    tracker.note(3, 9)

    assert tracker.watermark == 9


def test_held_notes_covered_by_a_long_note_do_not_move_the_watermark_back():
    tracker = SeqTracker()
    tracker.note(3, 4)

    tracker.note(1, 10)

    assert tracker.watermark == 10
    tracker.note(11, 11)
    assert tracker.watermark == 11


def test_leaving_socket_does_not_remove_presence_its_reconnected_client_still_announces():
    room = make_room()
    old, new, other = FakePeer(), FakePeer(), FakePeer()
    for peer in (old, new, other):
        room.add_peer(peer)
    announcer = Awareness(Doc())
    announcer.set_local_state({"user": {"name": "Ada"}})
    payload = announcer.encode_awareness_update([announcer.client_id])
    room.apply_awareness(payload, old)
    announcer.set_local_state({"user": {"name": "Ada"}, "cursor": 1})
    room.apply_awareness(announcer.encode_awareness_update([announcer.client_id]), new)

    assert room.remove_peer(old) is None  # the reconnected socket still speaks for Ada
    assert announcer.client_id in room.awareness.states
    assert room.remove_peer(new) is not None
    assert announcer.client_id not in room.awareness.states
