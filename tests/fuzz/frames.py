"""Hostile y-websocket frames for the fuzz tests, and an oracle that is not the service's code.

Everything here is deterministic: the pool of valid updates is built from fixed client
ids, and frames come from Hypothesis strategies run with `derandomize=True` (or from a
`random.Random` with a fixed seed). The oracle (`classify`) decides what the service
must answer to a frame from the protocol's definition and pycrdt alone: it shares no code
with `collab.codec` or `collab.room`, so a bug there cannot hide behind the same bug here.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pycrdt import (
    Array,
    Awareness,
    Doc,
    Map,
    Text,
    XmlElement,
    XmlFragment,
    XmlText,
    get_update,
)

CORPUS = Path(__file__).parent / "corpus"

# COLLAB_FUZZ_SCALE=0.1 for a quick local run; `make test` runs the full amount.
SCALE = float(os.environ.get("COLLAB_FUZZ_SCALE", "1"))

# The limits the fuzzed services run with (small, so that "enormous" stays cheap).
MAX_FRAME_BYTES = 64 * 1024
MAX_AWARENESS_BYTES = 64 * 1024  # the service's fixed awareness limit
MAX_DOCUMENT_BYTES = 256 * 1024

BAD_FRAME = 4400
TOO_LARGE = 4413


# Encoding --------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """lib0's unsigned varint (7 bits per byte, little end first)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, offset: int, max_bytes: int | None = None) -> tuple[int, int]:
    """(value, next offset); IndexError past the end, ValueError beyond `max_bytes`."""
    value = shift = 0
    index = offset
    while True:
        if max_bytes is not None and index - offset >= max_bytes:
            raise ValueError("varint too long")
        byte = data[index]
        value |= (byte & 0x7F) << shift
        shift += 7
        index += 1
        if byte < 0x80:
            return value, index


def update_frame(update: bytes) -> bytes:
    return b"\x00\x02" + varint(len(update)) + update


def step1_frame(state_vector: bytes) -> bytes:
    return b"\x00\x00" + varint(len(state_vector)) + state_vector


def step2_frame(update: bytes) -> bytes:
    return b"\x00\x01" + varint(len(update)) + update


def awareness_frame(payload: bytes) -> bytes:
    return b"\x01" + varint(len(payload)) + payload


def awareness_payload(entries: Iterable[tuple[int, int, str]]) -> bytes:
    items = list(entries)
    out = bytearray(varint(len(items)))
    for client_id, clock, state in items:
        raw = state.encode()
        out += varint(client_id) + varint(clock) + varint(len(raw)) + raw
    return bytes(out)


# A reference reading of the wire format (y-websocket + the service's documented limits) --

# The service refuses length prefixes longer than this many bytes (README: hostile varints).
LENGTH_PREFIX_MAX_BYTES = 5


@dataclass(frozen=True, slots=True)
class Framed:
    """A frame that is a well-formed y-websocket message: its kind and its payload."""

    kind: str  # "step1" | "step2" | "update" | "awareness" | "query"
    payload: bytes


def read_frame(frame: bytes) -> Framed | None:
    """The message in `frame`, or None when it is not a y-websocket message the server takes.

    Message and sync types are single bytes (0, 1, 3 and 0/1/2); auth (2) only flows from
    the server. A payload is a varint length (at most five bytes) followed by exactly
    that many bytes, ending the frame.
    """
    if not frame:
        return None
    if frame[0] == 3:
        return Framed("query", b"") if len(frame) == 1 else None
    if frame[0] == 0:
        if len(frame) < 2 or frame[1] > 2:
            return None
        kind, offset = ("step1", "step2", "update")[frame[1]], 2
    elif frame[0] == 1:
        kind, offset = "awareness", 1
    else:
        return None
    try:
        length, start = read_varint(frame, offset, LENGTH_PREFIX_MAX_BYTES)
    except (IndexError, ValueError):
        return None
    if start + length != len(frame):
        return None
    return Framed(kind, frame[start:])


# Document state helpers ----------------------------------------------------------------------


def _changes_of(base: bytes, update: bytes) -> list[bytes]:
    doc: Doc[Any] = Doc()
    doc.apply_update(base)
    changes: list[bytes] = []
    doc.observe(lambda event: changes.append(event.update))
    doc.apply_update(update)
    return [change for change in changes if not carries_nothing(change)]


def deleted_ranges(update: bytes) -> list[tuple[int, int, int]] | None:
    """The delete set (client, clock, length) of an update without structs; None when it
    has structs. IndexError when it ends too soon."""
    structs, offset = read_varint(update, 0)
    if structs:
        return None
    ranges: list[tuple[int, int, int]] = []
    clients, offset = read_varint(update, offset)
    for _ in range(clients):
        client, offset = read_varint(update, offset)
        count, offset = read_varint(update, offset)
        for _ in range(count):
            clock, offset = read_varint(update, offset)
            length, offset = read_varint(update, offset)
            ranges.append((client, clock, length))
    return ranges


def carries_nothing(update: bytes) -> bool:
    """Whether an update has no struct and no deleted range: "00 00", or a delete set
    that names clients without ranges (yrs reports such changes for zero-length GCs)."""
    return deleted_ranges(update) == []


def state_of(updates: Iterable[bytes]) -> bytes:
    """The full state of the document the updates build, applied in order."""
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc.get_update()


def covers(big: bytes, small: bytes) -> bool:
    """Whether the document `big` already holds everything in the update `small`."""
    return not _changes_of(big, small)


def same_document(first: bytes, second: bytes) -> bool:
    """Whether two full-state updates describe the same document (block splits aside)."""
    if first == second:
        return True
    return covers(first, second) and covers(second, first)


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    count, offset = read_varint(state_vector, 0)
    clocks: dict[int, int] = {}
    for _ in range(count):
        client, offset = read_varint(state_vector, offset)
        clock, offset = read_varint(state_vector, offset)
        clocks[client] = clock
    return clocks


def leaves_pending(after: Doc[Any], update: bytes) -> bool:
    """Whether `update`, applied to the document `after`, left part of itself waiting.

    yrs keeps such parts inside the Doc (not in its encoded state) and integrates them
    when the missing updates arrive: structs of the update beyond the state vector of
    `after`, or deletions beyond it. What is left of the update is pycrdt's `get_update`
    of it against that state vector (its delete set whole), read here with this
    module's own varint reader.
    """
    have = decode_state_vector(after.get_state())
    try:
        rest = get_update(update, after.get_state())
    except BaseException as error:
        if not _contained(error):
            raise
        return False  # it does not decode: yrs integrated none of it
    try:
        ranges = deleted_ranges(rest)
    except Exception:
        return True
    if ranges is None:  # structs beyond the state vector
        return True
    return any(clock + length > have.get(client, 0) for client, clock, length in ranges)


# The oracle ----------------------------------------------------------------------------------

_AWARENESS_DECODE_ERRORS = (ValueError, IndexError, RuntimeError, TypeError, KeyError)

# Updates that wait (see Verdict.waits) one connection may send and stay open: the ninth
# closes it with 4400 (the close codes in the project's README).
MAX_WAITING_UPDATES = 8


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the service must do with one frame."""

    code: int | None  # the close code of the room's refusal, None when it takes the frame
    kind: str  # the message kind, "text", "invalid" or "oversized"
    # An update that leaves part of itself outside the document (see leaves_pending):
    # waiting for changes the room lacks or, for one yrs refuses, failed (neither the
    # service nor this oracle can tell which). Nothing of it may be kept, not even what
    # yrs took in: the room is rebuilt from the store.
    pending: bool = False
    # Pending, and yrs took it without an error: an update that depends on changes the
    # room lacks, as honest clients send just after a reconnect. The room refuses it
    # (4400), but the connection stays open for the first MAX_WAITING_UPDATES of them,
    # and once the room is rebuilt its sender gets a SyncStep1 asking for what it lacks.
    waits: bool = False
    panic: bool = False  # yrs panicked on it (PanicException): refused, room rebuilt
    overclaims: bool = False  # its header claims more clients than it has bytes: refused unread

    @property
    def damages(self) -> bool:
        """Whether the room must drop its Doc for the stored document after this frame."""
        return self.panic or self.pending

    def close_code(self, waited: int) -> int | None:
        """The close code of a connection that already sent `waited` updates that wait."""
        if self.waits and waited < MAX_WAITING_UPDATES:
            return None
        return self.code


def classify(frame: bytes | str, *, room_state: bytes, size_bytes: int) -> Verdict:
    """The verdict for `frame` sent to a room whose full state is `room_state`.

    `size_bytes` is the stored size of the document (what the size cap is measured on).
    """
    return Oracle().verdict(frame, room_state=lambda: room_state, size_bytes=size_bytes)


class Oracle:
    """`classify` with a copy of the room kept in step with it (no decoding of the room's
    state for every frame): the copy takes what the room keeps of every update."""

    def __init__(self) -> None:
        self._scratch: Doc[Any] | None = None

    def forget(self) -> None:
        """The room was rebuilt from the store: start again from a copy of it."""
        self._scratch = None

    def verdict(
        self,
        frame: bytes | str,
        *,
        room_state: Callable[[], bytes],
        size_bytes: int,
    ) -> Verdict:
        """The verdict for `frame`; `room_state` gives the room's full state when needed."""
        if isinstance(frame, str):
            return Verdict(BAD_FRAME, "text")
        if len(frame) > MAX_FRAME_BYTES:
            return Verdict(TOO_LARGE, "oversized")
        framed = read_frame(frame)
        if framed is None:
            return Verdict(BAD_FRAME, "invalid")
        if framed.kind == "query":
            return Verdict(None, "query")
        if framed.kind == "step1":
            try:
                Doc().get_update(framed.payload)
            except BaseException as error:
                if not _contained(error):
                    raise
                return Verdict(BAD_FRAME, "step1")
            return Verdict(None, "step1")
        if framed.kind == "awareness":
            if len(framed.payload) > MAX_AWARENESS_BYTES:
                return Verdict(TOO_LARGE, "awareness")
            try:
                Awareness(Doc()).apply_awareness_update(framed.payload, None)
            except _AWARENESS_DECODE_ERRORS:
                return Verdict(BAD_FRAME, "awareness")
            if not all(browser_reads(text) for text in presence_texts(framed.payload)):
                return Verdict(BAD_FRAME, "awareness")
            return Verdict(None, "awareness")
        update = framed.payload
        if update == b"\x00\x00":
            return Verdict(None, framed.kind)
        if size_bytes + len(update) > MAX_DOCUMENT_BYTES:
            return Verdict(TOO_LARGE, framed.kind)
        if claims_more_clients_than_bytes(update):
            return Verdict(BAD_FRAME, framed.kind, overclaims=True)
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = Doc()
            scratch.apply_update(room_state())
        try:
            scratch.apply_update(update)
        except BaseException as error:
            if not _contained(error):
                raise
            panic = not isinstance(error, Exception)
            # yrs integrates what it can before it fails, and what is left of the update
            # may wait inside the Doc (or even show in it later): then it counts as
            # pending. Otherwise the room keeps what yrs took in (it cannot roll back),
            # and so does the copy.
            pending = not panic and leaves_pending(scratch, update)
            if panic or pending:
                self.forget()
            return Verdict(BAD_FRAME, framed.kind, pending=pending, panic=panic)
        if leaves_pending(scratch, update):
            self.forget()
            return Verdict(BAD_FRAME, framed.kind, pending=True, waits=True)
        return Verdict(None, framed.kind)


def _contained(error: BaseException) -> bool:
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


def claims_more_clients_than_bytes(update: bytes) -> bool:
    """Whether the update's first varint (its number of clients) exceeds its length.

    Every client takes at least three bytes, so such a count is a lie; yrs would reserve
    memory for that many clients before reading on (bug 2 in tests/fuzz/README.md). A
    count that runs past the end is left to yrs.
    """
    try:
        count, _ = read_varint(update, 0)
    except IndexError:
        return False
    return count > len(update)


def presence_texts(payload: bytes) -> list[str]:
    """The state texts of an awareness payload that pycrdt decodes.

    y-protocols: a count, then per client its id, its clock and its state as a varint
    length and that many bytes of UTF-8 JSON ("" or "null": the client is gone). Like
    pycrdt's decoder, a length that runs past the end takes what is there.
    """
    count, offset = read_varint(payload, 0)
    texts = []
    for _ in range(count):
        _client, offset = read_varint(payload, offset)
        _clock, offset = read_varint(payload, offset)
        length, offset = read_varint(payload, offset)
        texts.append(payload[offset : offset + length].decode())
        offset += length
    return texts


def browser_reads(text: str) -> bool:
    """Whether a presence state is one y-protocols in a browser can take: empty, or strict
    JSON (JSON.parse refuses NaN and Infinity) that is an object or null."""
    if not text:
        return True
    try:
        state = strict_json(text)
    except (ValueError, RecursionError):
        return False
    return state is None or isinstance(state, dict)


# Valid updates: a deterministic pool covering every shared type ---------------------------------


POOL_FILE = Path(__file__).parent / "data" / "update-pool.bin"


@functools.cache
def update_pool() -> tuple[bytes, ...]:
    """Valid updates of every kind of shared type, in causal order (tests/fuzz/data/).

    Applied in order they build one document; out of order or mutated they are the
    raw material of corrupt updates. They are kept as a file: yrs encodes its hash maps
    in a different order in every process, so building them anew would change the bytes
    (and every mutation of them) from run to run. `build_update_pool` made the file.
    """
    data = POOL_FILE.read_bytes()
    updates = []
    offset = 0
    while offset < len(data):
        length, offset = read_varint(data, offset)
        updates.append(data[offset : offset + length])
        offset += length
    return tuple(updates)


def write_update_pool() -> None:
    """Regenerate tests/fuzz/data/update-pool.bin (changes every derived frame)."""
    POOL_FILE.parent.mkdir(exist_ok=True)
    POOL_FILE.write_bytes(b"".join(varint(len(u)) + u for u in build_update_pool()))


def build_update_pool() -> tuple[bytes, ...]:
    """The updates of update_pool(), built by three writers editing and syncing."""
    updates: list[bytes] = []
    rng = random.Random(20240611)
    writers = [Doc(client_id=client_id) for client_id in (11, 22, 33)]
    # Each step is recorded as everything its writer has that it had not recorded yet
    # (its edit, and what syncs brought it): every update then depends only on earlier ones.
    recorded = {writer.client_id: b"\x00" for writer in writers}

    def sync() -> None:
        for source in writers:
            for target in writers:
                if target is not source:
                    target.apply_update(source.get_update(target.get_state()))

    for step in range(60):
        doc = writers[step % len(writers)]
        text = doc.get("text", type=Text)
        choice = rng.randrange(8)
        with doc.transaction():
            if choice == 0 or len(text) < 3:
                text.insert(rng.randrange(len(text) + 1), f"w{step}é✓" * rng.randrange(1, 4))
            elif choice == 1:
                start = rng.randrange(len(text) - 1)
                del text[start : start + rng.randrange(1, 3)]
            elif choice == 2:
                text.format(0, min(len(text), 3), {"bold": True, "href": f"u{step}"})
            elif choice == 3:
                data = doc.get("map", type=Map)
                data[f"k{step}"] = rng.choice(
                    [step, step * 1.5, f"v{step}", True, None, [1, "x"], {"n": {"m": step}}]
                )
            elif choice == 4:
                items = doc.get("list", type=Array)
                items.append(Map({"n": step}) if step % 2 else Text(f"t{step}"))
            elif choice == 5:
                fragment = doc.get("xml", type=XmlFragment)
                fragment.children.append(XmlElement("p", {"class": f"c{step}"}, [XmlText("hi")]))
            elif choice == 6:
                text.insert_embed(0, {"image": f"i{step}.png"})
            else:
                data = doc.get("map", type=Map)
                if len(data):
                    del data[min(data.keys())]
                else:
                    data["x"] = 1
        updates.append(doc.get_update(recorded[doc.client_id]))
        recorded[doc.client_id] = doc.get_state()
        if step % 5 == 4:
            sync()
    return tuple(_causal_order([update for update in updates if update != b"\x00\x00"]))


def _causal_order(updates: list[bytes]) -> list[bytes]:
    """The updates reordered so that each one applies completely after those before it."""
    doc: Doc[Any] = Doc()
    ordered: list[bytes] = []
    remaining = list(updates)
    while remaining:
        for index, update in enumerate(remaining):
            trial: Doc[Any] = Doc()
            trial.apply_update(doc.get_update())
            trial.apply_update(update)
            if not leaves_pending(trial, update):
                doc.apply_update(update)
                ordered.append(remaining.pop(index))
                break
        else:
            raise AssertionError("the update pool has a dependency cycle")
    return ordered


# Half-valid updates: yrs integrates the first struct, then fails on the second -------------

# The author whose text ("hello", client 1, clocks 0-4) half-valid updates refer to.
AUTHOR_CLIENT = 1


@functools.cache
def author_update() -> bytes:
    doc: Doc[Any] = Doc(client_id=AUTHOR_CLIENT)
    doc.get("text", type=Text).insert(0, "hello")
    return doc.get_update()


def half_valid_update(
    clock: int, char: str, parent_clock: int, *, client: int = AUTHOR_CLIENT
) -> bytes:
    """Two structs of `client` at `clock`: a valid insert of `char` into the root text,
    then an item whose parent is one of that client's characters (not a type): yrs keeps
    the first and refuses the second, which it leaves outside the document, so the update
    is refused, nothing of it is kept and the room is rebuilt. From a new client at clock
    0 with `parent_clock` 0, that holds whatever the document."""
    raw = char.encode()
    first = b"\x04\x01" + varint(4) + b"text" + varint(len(raw)) + raw
    second = b"\x08\x00" + varint(client) + varint(parent_clock) + b"\x01\x7d\x01"
    return varint(1) + varint(2) + varint(client) + varint(clock) + first + second + b"\x00"


def text_inside(client: int, clock: int, parent: tuple[int, int]) -> bytes:
    """An update with one struct of `client` at `clock`: an empty XmlText whose parent is
    the item `parent` (client, clock). With clocks missing before it, it waits."""
    struct = b"\x07\x00" + varint(parent[0]) + varint(parent[1]) + b"\x06"  # type, parent id
    return varint(1) + varint(1) + varint(client) + varint(clock) + struct + b"\x00"


def waiting_updates(count: int) -> list[bytes]:
    """Updates that wait whatever the document holds: each one struct of a client of its
    own at clock 3, inside that client's item at clock 0 (clocks 0-2 nobody has)."""
    return [text_inside(client, 3, parent=(client, 0)) for client in range(90_000, 90_000 + count)]


@dataclass(frozen=True, slots=True)
class HalfValid:
    """A half-valid update frame, built against the room's state when it is sent."""

    char: str
    parent_clock: int

    def frame(self, room_state_vector: bytes) -> bytes:
        clock = decode_state_vector(room_state_vector).get(AUTHOR_CLIENT, 0)
        return update_frame(half_valid_update(clock, self.char, self.parent_clock % 5))


# Mutations -----------------------------------------------------------------------------------

_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x08, 0x04, 0x27, 0x28, 0xC1)


def mutate(data: bytes, ops: Iterable[tuple[int, int, int]], donor: bytes = b"") -> bytes:
    """Apply mutation operations (op, position, value) to `data`.

    Ops: flip a bit, set a byte, insert a byte, delete a byte, truncate, duplicate a
    span, splice in a span of `donor`, replace a byte with a huge varint.
    """
    out = bytearray(data)
    for op, position, value in ops:
        if not out:
            out.append(value & 0xFF)
            continue
        at = position % len(out)
        kind = op % 9
        if kind == 0:
            out[at] ^= 1 << (value % 8)
        elif kind == 1:
            out[at] = _INTERESTING[value % len(_INTERESTING)]
        elif kind == 2:
            out.insert(at, value & 0xFF)
        elif kind == 3:
            del out[at]
        elif kind == 4:
            del out[max(1, at) :]
        elif kind == 5:
            span = out[at : at + 1 + value % 16]
            out[at:at] = span
        elif kind == 6 and donor:
            start = value % len(donor)
            out[at:at] = donor[start : start + 1 + (value >> 8) % 32]
        elif kind == 7:
            out[at : at + 1] = varint((1 << (7 * (1 + value % 9))) - 1)
        else:
            out[at] = value & 0xFF
    return bytes(out)


# Hypothesis strategies -----------------------------------------------------------------------

_ops = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 1 << 20), st.integers(0, 1 << 16)),
    min_size=1,
    max_size=4,
)


@st.composite
def corrupt_updates(draw: st.DrawFn) -> bytes:
    """A valid update with a few mutations (the yrs decoder's input)."""
    pool = update_pool()
    base = draw(st.sampled_from(pool))
    donor = draw(st.sampled_from(pool))
    return mutate(base, draw(_ops), donor)


_huge_varints = st.sampled_from(
    [
        varint(2**32 - 1),
        varint(2**53),
        varint(2**63),
        b"\xff\xff\xff\xff\x0f",
        b"\x80" * 4 + b"\x10",
        b"\xff" * 9 + b"\x01",
        b"\x80" * 64,
        b"\xff\xff\xff\xff",
    ]
)


@st.composite
def framing_abuse(draw: st.DrawFn) -> bytes:
    """Right message types with wrong lengths: truncated, overlong, huge, off by some."""
    head = draw(st.sampled_from([b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01"]))
    payload = draw(st.binary(max_size=48))
    style = draw(st.integers(0, 5))
    if style == 0:
        return head + draw(_huge_varints) + payload
    if style == 1:  # declared length off by a few
        return head + varint(max(0, len(payload) + draw(st.integers(-3, 3)))) + payload
    if style == 2:  # truncated varint at the end of the frame
        return head + draw(st.sampled_from([b"\x80", b"\xff\xff", b"\x80\x80\x80"]))
    if style == 3:  # redundant (non-minimal) but short varints: still valid lengths
        return head + bytes([0x80 | (len(payload) & 0x7F), 0x80 | (len(payload) >> 7), 0]) + payload
    if style == 4:  # two messages in one frame
        return head + varint(len(payload)) + payload + head + varint(0)
    return head  # no length at all


_unknown_types = st.one_of(
    st.integers(4, 255).map(lambda kind: bytes([kind])),
    st.builds(lambda kind, rest: bytes([kind]) + rest, st.integers(4, 255), st.binary(max_size=16)),
    st.builds(lambda sync, rest: b"\x00" + bytes([sync]) + rest, st.integers(3, 255), st.binary()),
    st.sampled_from([b"\x02", b"\x02\x00\x00", b"\x02\x00\x05hello", b"\x80\x00", b"\x03\x00"]),
)


@st.composite
def awareness_payloads(draw: st.DrawFn) -> bytes:
    """Awareness updates: valid, odd (non-object JSON, NaN, huge ids) and broken."""
    style = draw(st.integers(0, 6))
    if style == 0:
        return draw(st.binary(max_size=64))
    states = st.sampled_from(
        [
            '{"user":{"name":"x","color":"#fff"}}',
            "null",
            "",
            "5",
            '"str"',
            "[1,2]",
            "{",
            '{"a":',
            '{"x":NaN}',
            '{"x":-Infinity}',
            '{"x":1e999}',
            "[" * 2000 + "]" * 2000,
            '{"\\ud800":1}',
        ]
    )
    entries = draw(
        st.lists(
            st.tuples(st.integers(0, 2**40), st.integers(0, 2**40), states), min_size=0, max_size=4
        )
    )
    payload = awareness_payload(entries)
    if style == 1:
        return payload
    if style == 2:  # count larger than the entries
        return varint(len(entries) + draw(st.integers(1, 2**32))) + payload[1:]
    if style == 3:  # invalid UTF-8 in a state
        return varint(1) + varint(1) + varint(1) + varint(2) + b"\xc3\x28"
    if style == 4:  # a state string whose length runs past the end
        return varint(1) + varint(1) + varint(1) + varint(1000) + b"{}"
    return mutate(payload, draw(_ops))


@functools.cache
def _prefix_state_vectors() -> tuple[bytes, ...]:
    doc: Doc[Any] = Doc()
    vectors = []
    for update in update_pool():
        doc.apply_update(update)
        clocks = sorted(decode_state_vector(doc.get_state()).items())  # a stable byte order
        vectors.append(varint(len(clocks)) + b"".join(varint(c) + varint(k) for c, k in clocks))
    return tuple(vectors)


@st.composite
def state_vectors(draw: st.DrawFn) -> bytes:
    """SyncStep1 payloads: real, mutated, random."""
    doc_state = Doc(client_id=5).get_state()
    style = draw(st.integers(0, 3))
    if style == 0:
        return draw(st.binary(max_size=24))
    if style == 1:
        count = draw(st.integers(0, 3))
        clocks = draw(st.lists(st.tuples(st.integers(0, 2**53), st.integers(0, 2**53)), max_size=3))
        out = varint(count)
        for client, clock in clocks:
            out += varint(client) + varint(clock)
        return out
    if style == 2:
        return draw(st.sampled_from(_prefix_state_vectors()))
    return mutate(doc_state, draw(_ops))


def frame_strategy() -> st.SearchStrategy[bytes | str]:
    """Every kind of hostile (and some valid) input, weighted towards the deep paths."""
    pool = st.sampled_from(update_pool())
    return st.one_of(
        st.binary(max_size=96),
        framing_abuse(),
        _unknown_types,
        corrupt_updates().map(update_frame),
        corrupt_updates().map(update_frame),
        corrupt_updates().map(update_frame),
        corrupt_updates().map(step2_frame),
        pool.map(update_frame),  # valid updates, weighted twice: most rooms lack their predecessors
        pool.map(update_frame),
        awareness_payloads().map(awareness_frame),
        state_vectors().map(step1_frame),
        st.just(b"\x03"),
        st.text(max_size=20),
    )


def generate(strategy: st.SearchStrategy[Any], count: int, seed: int = 0) -> list[Any]:
    """`count` values drawn from `strategy`, the same ones on every run (no database).

    Hypothesis is used here as a deterministic generator for the async harnesses; the
    pure properties use @given directly (with shrinking).
    """
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.integers(seed, seed), strategy)
    def collect(_seed: int, value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


def enormous_update(rng: random.Random, size: int, *, gap: bool = False) -> bytes:
    """A valid update of about `size` bytes from a new client (a big paste); with `gap`,
    one that depends on an earlier edit of that client, which nobody has: it waits."""
    doc: Doc[Any] = Doc(client_id=rng.randrange(1_000, 2**31))
    text = doc.get("text", type=Text)
    before = b"\x00"
    if gap:
        text.insert(0, "y")
        before = doc.get_state()
    text.insert(0, "z" * size)
    return doc.get_update(before)


def seeded_frames(seed: int, count: int) -> list[bytes | HalfValid]:
    """Cheap bulk frames from a seeded PRNG, mostly mutated valid updates.

    Also: valid updates of the pool (in and out of order), mutated whole frames, random
    bytes, and now and then a valid but enormous update (near or above the frame limit)
    so that documents reach their size cap, half of them waiting for an edit nobody has
    (dropped whole, however big).
    """
    rng = random.Random(seed)
    pool = update_pool()
    frames: list[bytes | HalfValid] = []
    for _ in range(count):
        base = rng.choice(pool)
        ops = [
            (rng.randrange(9), rng.randrange(1 << 20), rng.randrange(1 << 16))
            for _ in range(rng.randrange(1, 4))
        ]
        roll = rng.random()
        if roll < 0.62:
            frames.append(update_frame(mutate(base, ops, rng.choice(pool))))
        elif roll < 0.67:
            frames.append(step2_frame(mutate(base, ops, rng.choice(pool))))
        elif roll < 0.80:
            frames.append(mutate(update_frame(base), ops))
        elif roll < 0.86:
            frames.append(update_frame(base))
        elif roll < 0.985:
            frames.append(rng.randbytes(rng.randrange(0, 40)))
        elif roll < 0.995:
            frames.append(HalfValid(rng.choice("!é✓z"), rng.randrange(5)))
        else:
            size = rng.choice([30_000, 50_000, MAX_FRAME_BYTES - 10, MAX_FRAME_BYTES + 100])
            gap = rng.random() < 0.5
            frames.append(update_frame(enormous_update(rng, size, gap=gap)))
    return frames


# Nasty inputs kept as files --------------------------------------------------------------------


def corpus_inputs() -> list[tuple[str, bytes | str]]:
    """Every file of the regression corpus: binary frames, or text frames (`*.txt`)."""
    inputs: list[tuple[str, bytes | str]] = []
    for path in sorted(CORPUS.iterdir()):
        if path.suffix == ".txt":
            inputs.append((path.name, path.read_text()))
        elif path.suffix == ".bin":
            inputs.append((path.name, path.read_bytes()))
    return inputs


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, which JavaScript's JSON.parse rejects, and
    numbers beyond a double: JSON.parse reads `1e999` as Infinity, and written back (by
    pycrdt's json.dumps, in every snapshot) it is `Infinity`, which it rejects."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    def double(number: str) -> float:
        value = float(number)
        if math.isinf(value):
            raise ValueError(f"{number[:20]} is beyond a double")
        return value

    return json.loads(text, parse_constant=refuse, parse_float=double)
