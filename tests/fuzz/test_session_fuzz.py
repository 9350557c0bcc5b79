"""Tens of thousands of hostile frames through the real consumer, session, room, journal
(PostgreSQL) and fan-out (Redis), in this process: two registries stand for two workers.

Each document gets a watcher on each "process", then an attacker sends frames one by one;
a refused attacker reconnects. For every frame the oracle (tests/fuzz/frames.py, which
shares no code with the service) says which close code it must get: 4400, 4413, or none.
After every document: every watcher, both rooms, the stored log and a fresh joiner hold
the same document (yrs may keep a valid prefix of a corrupt update: the service stores
and relays that part, so "the same" is the property, not "unchanged"), and the stored
state decodes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from collab.registry import RoomRegistry
from hypothesis import strategies as st

from tests.fuzz import stats
from tests.fuzz.frames import (
    MAX_DOCUMENT_BYTES,
    HalfValid,
    Oracle,
    author_update,
    claims_many_clients,
    frame_strategy,
    generate,
    same_document,
    seeded_frames,
    update_frame,
    update_pool,
)
from tests.fuzz.harness import Socket, make_registry, new_doc_id, settle
from tests.support.processes import RedisServer

pytestmark = pytest.mark.django_db(transaction=True, databases=["postgres"])

# COLLAB_FUZZ_SCALE=0.1 for a quick local run; `make test` runs the full amount.
SCALE = float(os.environ.get("COLLAB_FUZZ_SCALE", "1"))
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


@dataclass
class Campaign:
    """Runs frames against documents and checks the service's promises after each one."""

    first: RoomRegistry
    second: RoomRegistry
    label: str
    sent: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    skipped_pending: int = 0
    skipped_expensive: int = 0
    partial: int = 0
    panics: int = 0
    documents: int = 0
    mismatches: list[str] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)

    async def run(self, frames: list[Any]) -> None:
        pool = update_pool()
        for number, start in enumerate(range(0, len(frames), FRAMES_PER_DOCUMENT)):
            # Documents with more or less of the pool in them: mutated updates then hit
            # missing, present and half-present structures.
            preload = (number * 37) % (len(pool) + 1)
            remaining = frames[start : start + FRAMES_PER_DOCUMENT]
            while remaining:
                remaining = await self.document(remaining, preload=preload)

    async def document(self, frames: list[Any], *, preload: int) -> list[Any]:
        """Send frames to a new document until they run out or one poisons the room."""
        self.documents += 1
        doc_id = new_doc_id(self.label)
        writer = await Socket(self.first, doc_id).open(sync=False)
        for update in (author_update(), *update_pool()[:preload]):  # a real document
            assert await writer.send(update_frame(update)) is None
        here = await Socket(self.first, doc_id).open()
        there = await Socket(self.second, doc_id).open()
        attacker = await Socket(self.first, doc_id).open(sync=False)
        room = self.first.rooms[doc_id]
        await settle([self.first])
        oracle = Oracle()
        room_changes: list[bytes] = []
        watch = room.doc.observe(
            lambda event: room_changes.append(event.update) if event.update != b"\x00\x00" else None
        )
        rest: list[Any] = []
        self.accepted = []
        unsettled = 0  # bytes accepted since the journal last committed (size_bytes lags)
        for index, frame in enumerate(frames):
            gapless = isinstance(frame, HalfValid)
            if isinstance(frame, HalfValid):
                frame = frame.frame(room.doc.get_state())
            if claims_many_clients(frame):
                self.skipped_expensive += 1  # a known bug: tests/abuse/test_expensive_updates.py
                continue
            if unsettled and room.size_bytes + unsettled + len(frame) > MAX_DOCUMENT_BYTES:
                await settle([self.first])  # the size cap is measured on committed bytes
                unsettled = 0
            verdict = oracle.verdict(
                frame, room_state=room.doc.get_update, size_bytes=room.size_bytes, gapless=gapless
            )
            if verdict.pending:
                # Updates with missing dependencies, accepted or refused, leave structs in
                # the room that are neither stored nor relayed: a known bug (see
                # tests/abuse/test_missing_dependencies.py) that would break the checks
                # below for that reason alone.
                self.skipped_pending += 1
                continue
            room_changes.clear()
            try:
                code = await attacker.send(frame)
            except BaseException as error:
                path = stats.save_finding("crash", frame)
                raise AssertionError(
                    f"the consumer raised {error!r} for the frame saved in {path}"
                ) from error
            self.sent += 1
            if code != verdict.code:
                path = stats.save_finding("code", frame)
                self.mismatches.append(
                    f"{verdict.kind} frame {path.name}: closed with {code} "
                    f"({attacker.close_reason!r}), expected {verdict.code}"
                )
            if room_changes:
                oracle.forget()
            if code is None:
                if verdict.kind in ("update", "step2"):
                    unsettled += len(frame)
                    self.accepted.append(frame)
                continue
            self.refused[code] = self.refused.get(code, 0) + 1
            if room_changes:
                if verdict.kind in ("update", "step2") and code == 4400:
                    self.partial += 1  # a valid prefix, stored and relayed: checked below
                    unsettled += len(frame)
                    self.accepted.append(frame)
                else:
                    path = stats.save_finding("changed", frame)
                    self.mismatches.append(
                        f"refused {verdict.kind} frame {path.name} changed the room"
                    )
            await attacker.close()
            if verdict.panic:
                # yrs panicked inside this room's Doc: it may be corrupt, and a later valid
                # update can then hang the worker (a known bug, see
                # tests/abuse/test_yrs_panics.py). Check what we have, go on with a new one.
                self.panics += 1
                rest = frames[index + 1 :]
                break
            attacker = await Socket(self.first, doc_id).open(sync=False)
        room.doc.unobserve(watch)
        await self.check(doc_id, room, [writer, here, there, attacker])
        return rest

    async def check(self, doc_id: str, room: Any, sockets: list[Socket]) -> None:
        writer, here, there, attacker = sockets
        await settle([self.first, self.second])
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
        fresh = await Socket(self.second, doc_id).open()
        deadline = time.monotonic() + 5
        while not same_document(state, fresh.doc.get_update()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{doc_id}: a fresh joiner got another document")
            await asyncio.sleep(0.02)
        for socket in (writer, here, there, attacker, fresh):
            await socket.close()

    def report(self) -> str:
        return (
            f"{self.label}: {self.sent} frames sent to {self.documents} documents, refused "
            f"{self.refused}, {self.partial} partial updates kept, {self.panics} yrs panics, "
            f"skipped {self.skipped_pending} pending and {self.skipped_expensive} huge-client-count"
        )


@pytest.mark.timeout(600, method="thread")  # a yrs hang holds the GIL: only a thread sees it
async def test_bulk_mutated_frames_close_only_their_connection_with_the_right_code(workers, caplog):
    caplog.set_level(logging.WARNING, logger="collab")  # one INFO line per refusal otherwise
    first, second = workers
    campaign = Campaign(first, second, "bulk")
    frames = seeded_frames(seed=1, count=int(22_000 * SCALE))
    await campaign.run(frames)
    stats.record("in-process frames (seeded mutations)", campaign.sent)
    print(campaign.report())
    assert not campaign.mismatches, "\n".join(campaign.mismatches[:20])
    assert campaign.sent >= 18_000 * SCALE, campaign.report()
    # The run must reach every outcome, or the oracle and the generator have drifted.
    assert campaign.refused.get(4400, 0) > 13_000 * SCALE and campaign.refused.get(4413, 0) > 0
    assert campaign.partial > 0


@pytest.mark.timeout(300, method="thread")
async def test_structured_frames_from_hypothesis(workers, caplog):
    caplog.set_level(logging.WARNING, logger="collab")
    first, second = workers
    campaign = Campaign(first, second, "structured")
    frames = generate(
        st.lists(frame_strategy(), min_size=40, max_size=40), max(1, int(150 * SCALE))
    )
    flat = [frame for batch in frames for frame in batch]
    await campaign.run(flat)
    stats.record("in-process frames (hypothesis strategies)", campaign.sent)
    print(campaign.report())
    assert not campaign.mismatches, "\n".join(campaign.mismatches[:20])
    assert campaign.sent >= 5_000 * SCALE, campaign.report()
