"""Tens of thousands of hostile frames through the real consumer, session, room, journal
(PostgreSQL) and fan-out (Redis), in this process: two registries stand for two workers.

Each document gets a watcher on each "process", then an attacker sends frames one by one;
a refused attacker reconnects. For every frame the oracle (tests/fuzz/frames.py, which
shares no code with the service) says which close code it must get: 4400, 4413, or none
(an update that waits for changes the room lacks keeps its connection open up to the
ninth), and whether the room must be rebuilt from the store (an update that leaves part
of itself outside the document, a yrs panic): then the registry must rebuild it exactly
once, nothing of that frame may remain, and the sender of an update that waited, still
connected, must be asked for what the room lacks (a SyncStep1 with the rebuilt room's
state vector); the document goes on with the rebuilt room. After every document: every
watcher, both rooms, the stored log and a fresh joiner hold the same document, and the
stored state decodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from collab.errors import BadUpdate, UpdateWaits
from collab.registry import RoomRegistry
from collab.room import Room
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pycrdt import Doc, Text

from tests.fuzz import stats
from tests.fuzz.frames import (
    MAX_DOCUMENT_BYTES,
    MAX_WAITING_UPDATES,
    SCALE,
    HalfValid,
    Oracle,
    author_update,
    covers,
    decode_state_vector,
    frame_strategy,
    generate,
    half_valid_update,
    read_varint,
    same_document,
    seeded_frames,
    text_inside,
    update_frame,
    update_pool,
    waiting_updates,
)
from tests.fuzz.harness import Socket, make_registry, new_doc_id, settle
from tests.fuzz.test_room_fuzz import Peer
from tests.support.processes import RedisServer

pytestmark = pytest.mark.django_db(transaction=True, databases=["postgres"])

# Frames per document before its invariants are checked and a new document starts.
FRAMES_PER_DOCUMENT = 1000


@pytest.fixture
async def workers(redis_server: RedisServer) -> AsyncIterator[tuple[RoomRegistry, RoomRegistry]]:
    first, second = make_registry(redis_server), make_registry(redis_server)
    await first.start()
    await second.start()
    yield first, second
    await first.stop()
    await second.stop()


@pytest.fixture
async def registry(redis_server: RedisServer) -> AsyncIterator[RoomRegistry]:
    """One worker's registry whose heal loop stays out of the test's way."""
    registry = make_registry(redis_server, heal_interval_seconds=3600.0)
    await registry.start()
    yield registry
    await registry.stop()


async def until(condition: Callable[[], bool], timeout: float = 5) -> bool:
    """Whether `condition` holds within `timeout` seconds (queued sends run meanwhile)."""
    deadline = time.monotonic() + timeout
    turns = 0
    while not condition():
        if time.monotonic() > deadline:
            return False
        turns += 1
        await asyncio.sleep(0 if turns < 50 else 0.01)  # a few loop turns usually suffice
    return True


@dataclass
class Campaign(stats.Tally):
    """Runs frames against documents and checks the service's promises after each one."""

    first: RoomRegistry
    second: RoomRegistry
    label: str
    hoarders: int = 0  # connections closed for their ninth update that waited
    documents: int = 0
    accepted: list[bytes] = field(default_factory=list)

    async def run(self, frames: list[Any]) -> None:
        pool = update_pool()
        for number, start in enumerate(range(0, len(frames), FRAMES_PER_DOCUMENT)):
            # Documents with more or less of the pool in them: mutated updates then hit
            # missing, present and half-present structures.
            preload = (number * 37) % (len(pool) + 1)
            # Each document ends with updates that wait whatever it holds, more than one
            # connection may send: the last must close it.
            hoard = [update_frame(update) for update in waiting_updates(MAX_WAITING_UPDATES + 1)]
            await self.document([*frames[start : start + FRAMES_PER_DOCUMENT], *hoard], preload)

    async def document(self, frames: list[Any], preload: int) -> None:
        """Send frames to a new document, then check every view of it."""
        self.documents += 1
        doc_id = new_doc_id(self.label)
        writer = await Socket(self.first, doc_id).open(sync=False)
        for update in (author_update(), *update_pool()[:preload]):  # a real document
            assert await writer.send(update_frame(update)) is None
        here = await Socket(self.first, doc_id).open()
        there = await Socket(self.second, doc_id).open()
        attacker = await Socket(self.first, doc_id).open(sync=False)
        waited = 0  # updates of the attacker's connection that waited
        room = self.first.rooms[doc_id]
        await settle([self.first])
        oracle = Oracle()
        room_changes: list[bytes] = []

        def observe(event: Any) -> None:
            if event.update != b"\x00\x00":
                room_changes.append(event.update)

        observed, watch = room.doc, room.doc.observe(observe)
        rebuilds_before = rebuilds_so_far()
        self.accepted = []
        unsettled = 0  # bytes accepted since the journal last committed (size_bytes lags)
        for frame in frames:
            if isinstance(frame, HalfValid):
                frame = frame.frame(room.doc.get_state())
            if unsettled and room.size_bytes + unsettled + len(frame) > MAX_DOCUMENT_BYTES:
                await settle([self.first])  # the size cap is measured on committed bytes
                unsettled = 0
            verdict = oracle.verdict(
                frame, room_state=room.doc.get_update, size_bytes=room.size_bytes
            )
            expected = verdict.close_code(waited)
            before = room.doc.get_update() if verdict.damages else b""
            asked = len(attacker.asked)
            self.count(verdict)
            room_changes.clear()
            try:
                code = await attacker.send(frame)
            except BaseException as error:
                path = stats.save_finding("crash", frame)
                raise AssertionError(
                    f"the consumer raised {error!r} for the frame saved in {path}"
                ) from error
            if code != expected:
                path = stats.save_finding("code", frame)
                self.mismatches.append(
                    f"{verdict.kind} frame {path.name}: closed with {code} "
                    f"({attacker.close_reason!r}), expected {expected} (after {waited} "
                    "updates that waited)"
                )
            if verdict.damages or room.damaged:
                # The registry rebuilds the room from the store once the journal has caught
                # up; frames wait for that, and so must the next verdict.
                await self.first.settled(room)
                rebuilt = rebuilds_so_far() - rebuilds_before
                rebuilds_before += rebuilt
                self.rebuilds += rebuilt
                if rebuilt != int(verdict.damages) or room.damaged:
                    path = stats.save_finding("rebuild", frame)
                    self.mismatches.append(
                        f"{verdict.kind} frame {path.name}: rebuilt {rebuilt} times, expected "
                        f"{int(verdict.damages)} (still damaged: {room.damaged})"
                    )
                elif not same_document(room.doc.get_update(), before):
                    path = stats.save_finding("kept", frame)
                    self.mismatches.append(
                        f"{verdict.kind} frame {path.name} damaged the room, yet the rebuilt "
                        "room is not what it was before it"
                    )
                if verdict.waits and code is None:
                    await self.asked_again(attacker, asked, room, frame)
                oracle.forget()
                unsettled = 0  # the rebuild read the size from the store, after the journal
                if room.doc is not observed:  # the rebuilt room has a new Doc: watch that
                    observed, watch = room.doc, room.doc.observe(observe)
                if verdict.panic:
                    await self.check(doc_id, room, here, there)  # before the room goes on
            elif room_changes:
                if code is None or (verdict.kind in ("update", "step2") and code == 4400):
                    # Accepted, or a valid prefix of a refused update: stored and relayed.
                    self.partial += code is not None
                    unsettled += len(frame)
                    self.accepted.append(frame)
                else:
                    path = stats.save_finding("changed", frame)
                    self.mismatches.append(
                        f"refused {verdict.kind} frame {path.name} changed the room"
                    )
            waited += verdict.waits
            self.hoarders += verdict.waits and code is not None
            if code is not None:
                self.refuse(code)
                await attacker.close()
                attacker = await Socket(self.first, doc_id).open(sync=False)
                waited = 0
        observed.unobserve(watch)
        if rebuilds_so_far() != rebuilds_before:
            self.mismatches.append(f"{doc_id}: a room was rebuilt without a damaging frame")
        await self.check(doc_id, room, here, there)
        for socket in (writer, here, there, attacker):
            await socket.close()

    async def asked_again(
        self, attacker: Socket, asked: int, room: Room, frame: bytes | str
    ) -> None:
        """The sender of a dropped update, still connected, is asked once for what the
        rebuilt room lacks: a SyncStep1 with the room's state vector. `asked`: how many
        SyncStep1 it had before (the greeting, the first, may not have arrived yet)."""
        asked = max(asked, 1)
        await until(lambda: len(attacker.asked) > asked)
        state = decode_state_vector(room.doc.get_state())
        received = [decode_state_vector(vector) for vector in attacker.asked[asked:]]
        if received != [state]:
            path = stats.save_finding("not-asked", frame)
            self.mismatches.append(
                f"the sender of {path.name} was asked for {received}, expected once for the "
                f"room's {state}"
            )

    async def check(self, doc_id: str, room: Room, here: Socket, there: Socket) -> None:
        """Both rooms, both watchers, the store and fresh joiners on both processes agree."""
        await settle([self.first, self.second])
        await self.first.settled(room)
        other = self.second.rooms[doc_id]
        state = room.doc.get_update()

        def converged() -> bool:
            return (
                same_document(state, other.doc.get_update())
                and same_document(state, here.doc.get_update())
                and same_document(state, there.doc.get_update())
            )

        deadline = time.monotonic() + 5
        while not converged():
            if time.monotonic() > deadline:
                views = {
                    "the other process's room": other.doc.get_update(),
                    "the watcher on this process": here.doc.get_update(),
                    "the watcher on the other process": there.doc.get_update(),
                }
                differ = [name for name, view in views.items() if not same_document(state, view)]
                path = stats.save_finding("diverged", b"".join(self.accepted))
                raise AssertionError(
                    f"{doc_id}: the room and {', '.join(differ)} diverged; the frames the "
                    f"document accepted (and partial ones) are in {path}"
                )
            await asyncio.sleep(0.02)
        assert here.close_code is None and there.close_code is None, "a watcher was closed"
        tail = await self.first.store.read_since(doc_id, 0)
        assert same_document(state, tail.update or b"\x00\x00"), f"{doc_id}: storage diverged"
        for registry in (self.first, self.second):
            fresh = await Socket(registry, doc_id).open()
            deadline = time.monotonic() + 5
            while not same_document(state, fresh.doc.get_update()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{doc_id}: a fresh joiner got another document")
                await asyncio.sleep(0.02)
            await fresh.close()

    def report(self) -> str:
        return (
            f"{self.label}: {self.sent} frames sent to {self.documents} documents, refused "
            f"{self.refused}, {self.partial} partial updates kept, {self.pending} leaving "
            f"something outside the document ({self.waits} of them waiting, dropped) and "
            f"{self.panics} yrs panics ({self.rebuilds} rooms rebuilt from the store), "
            f"{self.hoarders} connections closed at their ninth update that waited, "
            f"{self.overclaims} claiming more clients than bytes"
        )


def rebuilds_so_far() -> int:
    """collab_room_rebuilds_total of this process (both registries count into it)."""
    return int(REGISTRY.get_sample_value("collab_room_rebuilds_total") or 0)


async def run_campaign(
    workers: tuple[RoomRegistry, RoomRegistry],
    caplog: Any,
    label: str,
    frames: list[Any],
    *,
    source: str,
) -> Campaign:
    """The frames against two workers, counted (as from `source`) and reported; no promise
    may be broken."""
    caplog.set_level(logging.WARNING, logger="collab")  # one INFO line per refusal otherwise
    caplog.set_level(logging.ERROR, logger="collab.registry")  # and a WARNING per rebuild
    campaign = Campaign(*workers, label)
    await campaign.run(frames)
    stats.record(f"in-process frames ({source})", campaign.sent)
    stats.record("in-process rooms rebuilt from the store (registry)", campaign.rebuilds)
    stats.record("in-process updates that wait, dropped (registry)", campaign.waits)
    print(campaign.report())
    assert not campaign.mismatches, "\n".join(campaign.mismatches[:20])
    return campaign


@pytest.mark.timeout(600, method="thread")  # a yrs hang holds the GIL: only a thread sees it
async def test_bulk_mutated_frames_close_only_their_connection_with_the_right_code(workers, caplog):
    frames = seeded_frames(seed=1, count=int(22_000 * SCALE))
    campaign = await run_campaign(workers, caplog, "bulk", frames, source="seeded mutations")
    assert campaign.sent >= 20_000 * SCALE, campaign.report()
    # The run must reach every outcome, or the oracle and the generator have drifted.
    assert campaign.refused.get(4400, 0) > 15_000 * SCALE and campaign.refused.get(4413, 0) > 0
    assert campaign.overclaims > 0 and campaign.waits > 0 and campaign.hoarders > 0
    assert campaign.pending > campaign.waits and campaign.panics > 0, campaign.report()


@pytest.mark.timeout(300, method="thread")
async def test_structured_frames_from_hypothesis(workers, caplog):
    frames = generate(
        st.lists(frame_strategy(), min_size=40, max_size=40), max(1, int(150 * SCALE))
    )
    flat = [frame for batch in frames for frame in batch]
    campaign = await run_campaign(
        workers, caplog, "structured", flat, source="hypothesis strategies"
    )
    assert campaign.sent >= 5_000 * SCALE, campaign.report()


async def test_a_room_damaged_while_its_unload_waits_for_the_journal_stays_usable(workers):
    # tests/fuzz/README.md, known bug 8 (fixed): the unload waits for the rebuild.
    first, _ = workers
    doc_id = new_doc_id("unload")
    room = await first.acquire(doc_id)
    saved = first.accept_update(room, author_update(), None)  # the unload must wait for it
    unloading = asyncio.create_task(first.release(room))
    for _ in range(3):
        await asyncio.sleep(0)  # the unload is now waiting for the journal
    again = await first.acquire(doc_id)
    assert again is room, "the unload did not wait for the journal: no race to test"
    with pytest.raises(BadUpdate):  # refused after yrs kept part of it: damaged
        first.accept_update(again, half_valid_update(5, "!", 2), None)
    assert again.damaged
    await first.release(again)  # the unload goes on, and must wait for the rebuild
    await first.settled(again)
    assert not again.damaged
    await unloading
    assert doc_id not in first.rooms
    assert saved is not None
    await saved
    loaded = await first.acquire(doc_id)  # loads anew: what the unload left is consistent
    try:
        stored = await first.store.read_since(doc_id, 0)
        assert stored.update is not None
        assert same_document(loaded.doc.get_update(), stored.update)
        writer: Doc[Any] = Doc(client_id=7)
        writer.get("text", type=Text).insert(0, "more ")
        durable = first.accept_update(loaded, writer.get_update(), None)
        assert durable is not None
        await durable
        stored = await first.store.read_since(doc_id, 0)
        assert stored.update is not None
        assert same_document(loaded.doc.get_update(), stored.update)
        assert "more " in str(loaded.doc.get("text", type=Text))
    finally:
        await first.release(loaded)


async def test_an_update_accepted_while_a_rebuild_reads_the_store_stays_in_the_room(
    registry, monkeypatch
):
    # tests/fuzz/README.md, known bug 11 (fixed): sessions wait while a room is rebuilt.
    doc_id = new_doc_id("rebuild")
    room = await registry.acquire(doc_id)
    await registry.accept_update(room, author_update(), None)
    writer: Doc[Any] = Doc(client_id=7)
    writer.get("text", type=Text).insert(0, " later")
    later = writer.get_update()
    read_since = registry.store.read_since
    delivered: list[asyncio.Task[None]] = []

    async def deliver() -> None:
        # What Session.receive does with a client's update.
        if room.damaged:
            await registry.settled(room)
        durable = registry.accept_update(room, later, None)
        assert durable is not None
        await durable

    async def reading(doc: str, seq: int) -> Any:
        if doc == doc_id and seq == 0 and not delivered:
            # A client's update arrives while the rebuild reads the store.
            delivered.append(asyncio.create_task(deliver()))
            await asyncio.sleep(0)  # it gets as far as it may before the read
        return await read_since(doc, seq)

    monkeypatch.setattr(registry.store, "read_since", reading)
    # It depends on changes the room lacks: the room is rebuilt without it.
    with pytest.raises(UpdateWaits):
        registry.accept_update(room, text_inside(99, 5, parent=(99, 0)), None)
    await registry.settled(room)
    assert delivered, "the rebuild did not read the store"
    await delivered[0]
    stored = await read_since(doc_id, 0)
    assert stored.update is not None
    assert same_document(room.doc.get_update(), stored.update), "the room lost the update"
    assert " later" in str(room.doc.get("text", type=Text))
    await registry.release(room)


async def test_a_rebuilt_room_holds_what_it_relays_to_its_peers(registry, monkeypatch):
    # tests/fuzz/README.md, known bug 12 (fixed): a rebuild applies what it relays.
    doc_id = new_doc_id("relayed")
    room = await registry.acquire(doc_id)
    await registry.accept_update(room, author_update(), None)
    peer = Peer()
    room.add_peer(peer)
    other: Doc[Any] = Doc(client_id=8)
    other.get("text", type=Text).insert(0, "meanwhile ")
    read_since = registry.store.read_since

    async def reading(doc: str, seq: int) -> Any:
        tail = await read_since(doc, seq)
        if doc == doc_id and seq == 0:
            # Between the rebuild's two reads another process stores an update; its
            # fan-out message is still on its way (or lost: the heal loop repairs that).
            await registry.store.append({doc_id: [other.get_update()]})
        return tail

    monkeypatch.setattr(registry.store, "read_since", reading)
    with pytest.raises(UpdateWaits):
        registry.accept_update(room, text_inside(99, 5, parent=(99, 0)), peer)
    await registry.settled(room)
    seen: Doc[Any] = Doc()  # what the peer holds
    seen.apply_update(author_update())
    for frame in peer.frames:
        if frame[:2] in (b"\x00\x01", b"\x00\x02"):  # SyncStep2 or Update
            seen.apply_update(frame[read_varint(frame, 2)[1] :])
    assert "meanwhile" in str(seen.get("text", type=Text))  # relayed to the peer
    # What the peer writes next builds on it: the room must hold it too, or that edit
    # waits there, is dropped and costs another rebuild.
    assert covers(room.doc.get_update(), seen.get_update()), "the room lacks it"
    await registry.release(room)
