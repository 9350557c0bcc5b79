"""The journal's bound on pending updates (COLLAB_MAX_PENDING_UPDATES) during a database outage.

While PostgreSQL is down nothing becomes durable, so each worker's journal holds what
it accepted and retries. The bound keeps that memory finite: once a worker holds
`COLLAB_MAX_PENDING_UPDATES` updates, the next update it is sent is refused with 1013
(`journal.submit` raises `Unavailable`, the consumer closes the socket with its code).
The client keeps the refused edit, like every edit it makes while disconnected, and
hands it back in its SyncStep2 when it reconnects after the database returns.

What must hold (DESIGN, promises 1 and 2): nothing undurable is relayed during the
outage; afterwards everyone converges within 5 s and every insert anyone made, the
refused ones included, is stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from collab.codec import update_frame
from collab.conf import CollabConfig
from collab.consumers import DocumentConsumer
from collab.errors import CloseCode, Unavailable
from collab.registry import RoomRegistry
from collab.session import Session
from collab.store import Appended, Tail
from pycrdt import Doc, Text, create_sync_message, handle_sync_message, merge_updates

from tests.faults.harness import CONVERGENCE_BOUND_SECONDS
from tests.faults.outage import assert_nothing_relayed, inserted_since, pending_updates, relay_cut
from tests.faults.scenario import EditingRun, close_codes
from tests.support.pgcluster import PrivatePostgres
from tests.support.resilient import split_tokens
from tests.support.yclient import clients_on_distinct_workers, wait_until

MAX_PENDING = 20
BOUND_REASON = "storage is not keeping up"
# Each worker serves a writer typing 10 inserts/s: its journal holds MAX_PENDING within
# 2 s of the outage, and every writer it serves is refused at its next insert.
REFUSAL_SECONDS = 6.0


# In-process: the refused update itself ----------------------------------------------


class OutageStore:
    """The update log in memory, with a database that can be switched off."""

    def __init__(self) -> None:
        self.log: dict[str, list[bytes]] = {}
        self.up = True

    def _check(self) -> None:
        if not self.up:
            raise ConnectionError("connection refused (the database is down)")

    async def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, Appended]:
        self._check()
        appended = {}
        for doc_id, updates in batch.items():
            log = self.log.setdefault(doc_id, [])
            first = len(log) + 1
            log.extend(updates)
            appended[doc_id] = Appended(first, len(log), sum(map(len, log)), len(log))
        return appended

    async def read_since(self, doc_id: str, after_seq: int = 0) -> Tail:
        self._check()
        log = self.log.get(doc_id, [])
        tail = log[after_seq:]
        return Tail(merge_updates(*tail) if tail else None, len(log), sum(map(len, log)))

    async def last_seqs(self, doc_ids: Sequence[str]) -> dict[str, int]:
        self._check()
        return {doc_id: len(self.log[doc_id]) for doc_id in doc_ids if doc_id in self.log}

    async def compact(self, doc_id: str) -> None:
        return None

    async def close(self) -> None:
        return None

    def tokens(self, doc_id: str) -> list[str]:
        doc: Doc[Any] = Doc()
        doc.apply_update(merge_updates(*self.log[doc_id]))
        return split_tokens(str(doc.get("text", type=Text)))


class Peer:
    """A socket as a session sees it: keeps the frames it is sent."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.awareness_ids: set[int] = set()
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


async def open_session(registry: RoomRegistry, doc_id: str, name: str) -> tuple[Session, Peer]:
    """What the consumer does on connect: acquire the room, start a session."""
    peer = Peer(name)
    room = await registry.acquire(doc_id)
    session = Session(registry, room, peer)  # type: ignore[arg-type]
    session.start()
    return session, peer


def received_tokens(peer: Peer) -> list[str]:
    """What a client builds from the sync and update frames it was sent."""
    doc: Doc[Any] = Doc()
    for frame in peer.frames:
        if frame[0] == 0:
            handle_sync_message(frame[1:], doc)
    return split_tokens(str(doc.get("text", type=Text)))


async def test_an_update_refused_at_the_bound_is_stored_once_its_writer_resyncs():
    """A writer refused at the bound re-sends its edit after the outage: it must be stored.

    The refused update is what the client re-sends through its SyncStep2 after
    reconnecting (the y-websocket provider keeps it). If the room already integrated
    it when it was refused, the room's state vector claims it, the client's SyncStep2
    omits it, and it is never journaled: it then reaches joiners of this process
    through their SyncStep2 (relayed, not durable) and is lost when the room unloads.
    """
    store = OutageStore()
    registry = RoomRegistry(
        store=store,  # type: ignore[arg-type]
        layer=None,
        config=CollabConfig(max_pending_updates=3),
    )
    doc_id = "bound"
    # A viewer keeps the room loaded throughout, as any open tab does.
    viewer, viewer_peer = await open_session(registry, doc_id, "viewer")
    writer, _ = await open_session(registry, doc_id, "writer")
    client: Doc[Any] = Doc()
    text = client.get("text", type=Text)
    updates: list[bytes] = []
    client.observe(lambda event: updates.append(event.update))

    store.up = False
    refused = None
    for n in range(4):
        text.insert(len(text), f"w.{n};")
        try:
            await writer.receive(update_frame(updates[-1]))
        except Unavailable as error:
            refused = (n, error)
            break
    assert refused is not None and refused[0] == 3, f"the 4th update should be refused: {refused}"
    assert refused[1].close_code == CloseCode.TRY_AGAIN_LATER
    await writer.close()  # the consumer closes the socket with 1013 and leaves the room

    store.up = True
    await registry.journal.drain()
    # The writer reconnects: our SyncStep1 greets it, it answers with what we lack;
    # it also sends its own SyncStep1 and gets our SyncStep2.
    writer, writer_peer = await open_session(registry, doc_id, "writer-again")
    greeting = writer_peer.frames[0]
    reply = handle_sync_message(greeting[1:], client)
    if reply is not None:
        await writer.receive(reply)
    await writer.receive(create_sync_message(client))
    await registry.journal.drain()

    typed = [f"w.{n}" for n in range(4)]
    joiner, joiner_peer = await open_session(registry, doc_id, "joiner")
    await joiner.receive(create_sync_message(Doc()))
    relayed = received_tokens(joiner_peer)
    stored = store.tokens(doc_id)
    for session in (viewer, writer, joiner):
        await session.close()
    assert sorted(stored) == typed, (
        f"stored {stored} of the {typed} the writer typed; a joiner of the same process "
        f"was sent {relayed}, the viewer {received_tokens(viewer_peer)}: the update refused "
        "at the bound stayed in the room (session.py _accept_update applies it before "
        "journal.submit refuses it), so the writer's SyncStep2 no longer carries it"
    )


def received(update: bytes) -> dict[str, Any]:
    """The ASGI message of a binary frame carrying `update`."""
    return {"type": "websocket.receive", "bytes": update_frame(update)}


async def test_the_last_writer_of_a_room_refused_at_the_bound_hears_1013_during_the_outage():
    """The socket refused at the bound is told so while the database is still down.

    The close frame must not wait for the room to unload: unloading waits until every
    pending update is durable, which is exactly what an outage prevents. Meanwhile the
    client would hear nothing (its y-websocket provider shows "connected" while its
    edits go nowhere) and the consumer would read none of its frames.
    """
    store = OutageStore()
    registry = RoomRegistry(
        store=store,  # type: ignore[arg-type]
        layer=None,
        config=CollabConfig(max_pending_updates=3),
    )

    async def registry_factory() -> RoomRegistry:
        return registry

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    consumer = DocumentConsumer(registry_factory=registry_factory)
    consumer.scope = {"type": "websocket", "url_route": {"kwargs": {"doc_id": "last"}}}
    consumer.base_send = send
    await consumer.websocket_connect({"type": "websocket.connect"})
    assert sent[0]["type"] == "websocket.accept"

    client: Doc[Any] = Doc()
    text = client.get("text", type=Text)
    updates: list[bytes] = []
    client.observe(lambda event: updates.append(event.update))
    store.up = False
    for n in range(3):
        text.insert(len(text), f"w.{n};")
        await consumer.websocket_receive(received(updates[-1]))
    text.insert(len(text), "w.3;")  # one beyond the bound: refused
    refusing = asyncio.create_task(consumer.websocket_receive(received(updates[-1])))
    try:
        await wait_until(
            lambda: any(m["type"] == "websocket.close" for m in sent),
            timeout=3,
            what="the 1013 close frame while the database is down",
        )
        [close] = [m for m in sent if m["type"] == "websocket.close"]
        assert close["code"] == CloseCode.TRY_AGAIN_LATER, close
    finally:
        store.up = True
        await asyncio.wait_for(refusing, 10)
        await registry.journal.drain()


# Real processes ---------------------------------------------------------------------


@pytest.mark.parametrize("with_viewers", [False, True], ids=["writers-only", "with-viewers"])
async def test_a_writer_beyond_the_pending_bound_gets_1013_and_nothing_is_lost(
    editing_run: EditingRun, private_postgres: PrivatePostgres, with_viewers: bool
) -> None:
    """Six writers type through a database outage with COLLAB_MAX_PENDING_UPDATES=20.

    Every writer must be closed with 1013 once its worker holds 20 pending updates
    (within REFUSAL_SECONDS), nothing typed during the outage may reach anyone else
    before the database is back, and then everyone converges within 5 s with every
    insert stored exactly once.

    `with-viewers`: a client that only reads sits on every worker, as open tabs do. It
    keeps each room loaded while the writers are closed and reconnect; without it the
    last writer to leave a worker unloads the room (after the outage).
    """
    name = f"pending-bound-{'viewers' if with_viewers else 'writers'}"
    extra_env = {"COLLAB_MAX_PENDING_UPDATES": str(MAX_PENDING)}
    async with editing_run(name, private_postgres.url, extra_env=extra_env) as cluster:
        run, instances = cluster.run, cluster.instances
        # Viewers must end up with everything too.
        viewers = [
            viewer
            for instance in (instances if with_viewers else [])
            for viewer in await clients_on_distinct_workers(f"{instance.ws_url}/{name}", 2)
        ]
        try:
            await asyncio.to_thread(private_postgres.stop)
            stopped_at = time.monotonic()
            cut = relay_cut(run)
            held = [set(split_tokens(str(viewer.text))) for viewer in viewers]

            # Every writer keeps typing: each worker's journal fills up to the bound, and
            # then every writer it serves is closed with 1013 at its next update.
            refused_at: dict[str, float] = {}
            while len(refused_at) < len(run.writers):
                for writer in run.writers:
                    if writer.name not in refused_at and any(
                        d.at > stopped_at and d.code == 1013 and BOUND_REASON in d.reason
                        for d in writer.disconnects
                    ):
                        refused_at[writer.name] = time.monotonic() - stopped_at
                assert_nothing_relayed(run, cut)
                if time.monotonic() - stopped_at > REFUSAL_SECONDS:
                    run.save()
                assert time.monotonic() - stopped_at < REFUSAL_SECONDS, (
                    f"writers not closed with 1013 at the bound within {REFUSAL_SECONDS}s: "
                    f"only {refused_at}; "
                    f"their closes: { {w.name: w.disconnects[-3:] for w in run.writers} }"
                )
                await asyncio.sleep(0.1)
            run.figures["refused_at_bound_after_seconds"] = {
                writer: round(at, 3) for writer, at in sorted(refused_at.items())
            }
            pending = {i.name: await pending_updates(i) for i in instances}
            run.figures["pending_updates_at_bound"] = pending
            # Two workers per instance, each holding at most the bound.
            assert all(0 < count <= 2 * MAX_PENDING for count in pending.values()), pending
            await asyncio.sleep(2.0)  # typing and reconnect attempts go on against the outage
            assert_nothing_relayed(run, cut)
            for viewer, before in zip(viewers, held, strict=True):
                new = set(split_tokens(str(viewer.text))) - before
                assert not new, f"a viewer was sent undurable updates: {sorted(new)[:5]}"
            codes = close_codes(run)
            run.figures["close_codes_during_outage"] = codes
            assert codes == [1013], f"writers saw close codes {codes} during the outage"
            run.figures.update(
                outage_seconds=round(time.monotonic() - stopped_at, 3),
                inserted_during_outage=sum(inserted_since(run, cut).values()),
                disconnects_during_outage=run.disconnect_count(),
            )

            await asyncio.to_thread(private_postgres.start)
            back_at = time.monotonic()
            run.window("postgres_down", stopped_at, back_at)
            due = run.checkpoint()
            try:
                took = await run.converge_after(back_at, due, what="PostgreSQL restarted")
            except AssertionError as error:
                run.save()  # the figures of the outage, for the report
                diagnosis = await run.diagnose(due, instances)
                raise AssertionError(f"{error}\ndiagnosis: {json.dumps(diagnosis)}") from None
            assert took < CONVERGENCE_BOUND_SECONDS
            await asyncio.sleep(1.0)
            run.window("after_outage", back_at, time.monotonic())
            await run.final_check(instances)
            expected = run.inserted()
            await wait_until(
                lambda: all(set(split_tokens(str(v.text))) >= expected for v in viewers),
                timeout=CONVERGENCE_BOUND_SECONDS,
                what="every viewer holding every insert",
            )
            for viewer in viewers:
                tokens = split_tokens(str(viewer.text))
                assert len(tokens) == len(set(tokens)) and set(tokens) == expected, (
                    f"viewer {viewer.instance} lacks {sorted(expected - set(tokens))[:5]}"
                )
            run.figures["viewers_complete"] = len(viewers)
            run.save()
        finally:
            for viewer in viewers:
                await viewer.close()
