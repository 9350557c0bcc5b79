"""The consumer and the registry over a real Redis channel layer, in one test process.

Two registries with separate channel-layer connections stand for two processes: their
rooms share Redis and PostgreSQL exactly as two gunicorn workers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator

import pytest
from channels.routing import URLRouter
from channels_redis.pubsub import RedisPubSubChannelLayer
from collab import metrics
from collab.conf import CollabConfig
from collab.consumers import DocumentConsumer
from collab.docids import group_name
from collab.registry import RoomRegistry
from collab.session import MAX_WAITING_UPDATES
from collab.store import AsyncStore, DocumentStore
from django.urls import re_path
from pycrdt import Doc, Text, create_update_message

from tests.support.communicator import Peer
from tests.support.processes import RedisServer
from tests.support.yupdates import REFUSED_UPDATE_WITH_A_WAITING_STRUCT

pytestmark = pytest.mark.django_db(transaction=True, databases=["postgres"])

PREFIX = "collabtest"


def make_registry(redis: RedisServer, **overrides: object) -> RoomRegistry:
    config = CollabConfig(channel_prefix=PREFIX, heal_interval_seconds=0.2, **overrides)  # type: ignore[arg-type]
    layer = RedisPubSubChannelLayer(hosts=[redis.url], prefix=PREFIX)
    store = AsyncStore(DocumentStore(using="postgres"))
    return RoomRegistry(store=store, layer=layer, config=config)


@contextlib.asynccontextmanager
async def running_registry(redis: RedisServer, **overrides: object) -> AsyncIterator[RoomRegistry]:
    """A started registry, stopped on the way out: one process of its own."""
    registry = make_registry(redis, **overrides)
    await registry.start()
    try:
        yield registry
    finally:
        await registry.stop()


def application(registry: RoomRegistry) -> URLRouter:
    async def factory() -> RoomRegistry:
        return registry

    return URLRouter(
        [
            re_path(
                r"^ws/docs/(?P<doc_id>[^/]*)$", DocumentConsumer.as_asgi(registry_factory=factory)
            )
        ]
    )


@pytest.fixture
async def two_processes(
    redis_server: RedisServer,
) -> AsyncIterator[tuple[RoomRegistry, RoomRegistry]]:
    first, second = make_registry(redis_server), make_registry(redis_server)
    await first.start()
    await second.start()
    yield first, second
    await first.stop()
    await second.stop()


async def stored_text(doc_id: str) -> str:
    """The text of the document as stored (what any process loads)."""

    tail = await AsyncStore(DocumentStore(using="postgres")).read_since(doc_id, 0)
    stored: Doc = Doc()
    if tail.update is not None:
        stored.apply_update(tail.update)
    return str(stored.get("text", type=Text))


def redis_cli(redis: RedisServer, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(redis.port), *args], capture_output=True, text=True, check=True
    ).stdout


async def test_update_reaches_peers_on_both_processes_and_never_returns_to_sender(two_processes):
    first, second = two_processes
    alice = await Peer(application(first), "shared").connect()
    bob = await Peer(application(first), "shared").connect()
    carol = await Peer(application(second), "shared").connect()

    alice.text.insert(0, "hello")
    await alice.push()
    await bob.pump_until(lambda: str(bob.text) == "hello")
    await carol.pump_until(lambda: str(carol.text) == "hello")

    update_frames = [f for f in alice.frames if f[:2] == b"\x00\x02"]
    await alice.drain()
    assert [f for f in alice.frames if f[:2] == b"\x00\x02"] == update_frames == []
    for peer in (alice, bob, carol):
        await peer.close()


async def test_update_is_durable_before_any_peer_receives_it(two_processes):
    first, _ = two_processes
    alice = await Peer(application(first), "durable").connect()
    bob = await Peer(application(first), "durable").connect()
    # Fault: hold the database append until the test lets it through.
    gate = asyncio.Event()
    append = first.store.append

    async def held_append(batch):
        await gate.wait()
        return await append(batch)

    first.store.append = held_append  # type: ignore[method-assign]
    alice.text.insert(0, "kept")
    await alice.push()
    await bob.drain(0.3)
    assert str(bob.text) == ""  # nothing relayed while the append is pending
    gate.set()
    await bob.pump_until(lambda: str(bob.text) == "kept")
    # Bob has seen it, so the log must already hold it: read it with a fresh store.
    tail = await AsyncStore(DocumentStore(using="postgres")).read_since("durable", 0)
    assert tail.last_seq == 1 and tail.update is not None
    for peer in (alice, bob):
        await peer.close()


async def test_each_process_subscribes_once_per_document_and_publishes_once_per_update(
    two_processes, redis_server
):
    first, second = two_processes
    peers = [await Peer(application(first), "hot").connect() for _ in range(5)]
    peers += [await Peer(application(second), "hot").connect() for _ in range(5)]
    channel = f"{PREFIX}__group__{group_name(PREFIX, 'hot')}"
    assert redis_cli(redis_server, "PUBSUB", "NUMSUB", channel).split() == [channel, "2"]

    redis_cli(redis_server, "CONFIG", "RESETSTAT")
    for index in range(10):
        peers[0].text.insert(0, str(index))
        await peers[0].push()
    for peer in peers[1:]:
        await peer.pump_until(lambda p=peer: len(str(p.text)) == 10)
    stats = redis_cli(redis_server, "INFO", "commandstats")
    publishes = next(
        int(line.split("calls=")[1].split(",")[0])
        for line in stats.splitlines()
        if line.startswith("cmdstat_publish:")
    )
    # Group commit may merge updates into fewer publishes, never more than one each.
    assert 1 <= publishes <= 10
    for peer in peers:
        await peer.close()


async def test_awareness_crosses_processes_and_is_removed_when_its_owner_leaves(two_processes):
    first, second = two_processes
    alice = await Peer(application(first), "presence").connect()
    bob = await Peer(application(second), "presence").connect()
    await alice.set_presence({"user": {"name": "Alice"}})
    await bob.pump_until(
        lambda: bob.remote_presence() == {alice.awareness.client_id: {"user": {"name": "Alice"}}}
    )

    late = await Peer(application(second), "presence").connect()
    await late.pump_until(lambda: alice.awareness.client_id in late.remote_presence())

    await alice.close()
    await bob.pump_until(lambda: bob.remote_presence() == {})
    await late.pump_until(lambda: late.remote_presence() == {})
    for peer in (bob, late):
        await peer.close()


async def test_late_joiner_on_other_process_gets_everything_even_when_fanout_was_missed(
    two_processes,
):
    first, second = two_processes
    watcher = await Peer(application(second), "late").connect()  # loads the room on `second`
    second.fanout.deliver = lambda event: None  # fault: every fan-out message to it is lost
    writer = await Peer(application(first), "late").connect()
    writer.text.insert(0, "written on the first process")
    await writer.push()
    await writer.drain(0.05)

    joiner = await Peer(application(second), "late").connect()
    assert str(joiner.text) == "written on the first process"
    for peer in (watcher, writer, joiner):
        await peer.close()


async def test_process_that_missed_fanout_heals_from_the_log_without_client_action(two_processes):
    first, second = two_processes
    writer = await Peer(application(first), "heal").connect()
    reader = await Peer(application(second), "heal").connect()
    original = second.fanout.deliver
    second.fanout.deliver = lambda event: None  # fault: the fan-out message is dropped
    writer.text.insert(0, "missed")
    await writer.push()
    await reader.pump_until(lambda: str(reader.text) == "missed", timeout=5)
    second.fanout.deliver = original
    for peer in (writer, reader):
        await peer.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x07", 4400),  # unknown message type
        (b"\x00\x02\x05\x01", 4400),  # declared length beyond the frame
        (create_update_message(b"\x01\x02\x03garbage"), 4400),  # not a Yjs update
        ("a text frame", 4400),
        (b"\x00\x02" + b"\xff\xff\x7f" + b"x" * (2 * 1024 * 1024), 4413),  # over the frame limit
    ],
)
async def test_bad_frame_closes_only_its_connection(two_processes, frame, code):
    first, _ = two_processes
    good = await Peer(application(first), "robust").connect()
    good.text.insert(0, "before")
    await good.push()
    bad = await Peer(application(first), "robust").connect()
    await bad.pump_until(lambda: str(bad.text) == "before")
    await bad.send_raw(frame)
    await bad.pump_until(lambda: bad.close_code is not None)
    assert bad.close_code == code

    good.text.insert(len(good.text), " after")
    await good.push()
    other = await Peer(application(first), "robust").connect()
    await other.pump_until(lambda: str(other.text) == "before after")
    for peer in (good, other):
        await peer.close()


async def test_invalid_document_id_is_refused_with_4400(two_processes):
    first, _ = two_processes
    peer = Peer(application(first), "bad%20id")
    connected, _ = await peer.communicator.connect(timeout=5)
    assert connected
    await peer.pump_until(lambda: peer.close_code is not None)
    assert peer.close_code == 4400


async def test_room_unloads_and_unsubscribes_when_last_client_leaves(two_processes, redis_server):
    first, _ = two_processes
    peers = [await Peer(application(first), f"doc-{index}").connect() for index in range(20)]
    for peer in peers:
        peer.text.insert(0, "x")
        await peer.push()
    assert len(first.rooms) == 20
    for peer in peers:
        await peer.close()
    await asyncio.wait_for(_until(lambda: not first.rooms), 5)
    channels = redis_cli(redis_server, "PUBSUB", "CHANNELS", f"{PREFIX}__group__*").split()
    assert channels == []
    # Unloading flushed everything: a fresh process sees every document's content.
    reader = await Peer(application(first), "doc-7").connect()
    assert str(reader.text) == "x"
    await reader.close()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_unloaded_rooms_are_garbage_collected(two_processes):
    import gc
    import weakref

    first, _ = two_processes
    peer = await Peer(application(first), "collectable").connect()
    await peer.set_presence({"user": "x"})
    peer.text.insert(0, "x")
    await peer.push()
    room = weakref.ref(first.rooms["collectable"])
    await peer.close()
    await asyncio.wait_for(_until(lambda: not first.rooms), 5)
    await asyncio.sleep(0)  # let finished background tasks drop their references
    gc.collect()
    assert room() is None


async def test_half_valid_update_closes_its_sender_and_changes_nothing_anywhere(two_processes):

    first, second = two_processes
    author = Doc(client_id=1)
    text = author.get("text", type=Text)
    text += "hello"
    good = await Peer(application(first), "half").connect()
    remote = await Peer(application(second), "half").connect()
    good.doc.apply_update(author.get_update())
    await good.push()
    await remote.pump_until(lambda: str(remote.text) == "hello")

    bad = await Peer(application(first), "half").connect()
    # Valid struct ("!" at client 1, clock 5), then one whose parent is a character: yrs
    # integrates the first before it refuses the second, and cannot roll back.
    half_valid = bytes.fromhex("0102010504010474657874 012108000101017d0100".replace(" ", ""))
    await bad.send_raw(create_update_message(half_valid))
    await bad.pump_until(lambda: bad.close_code is not None)
    await first.settled(first.rooms["half"])
    good.text += "?"
    await good.push()

    assert bad.close_code == 4400
    await remote.pump_until(lambda: str(remote.text) == "hello?")
    joiner = await Peer(application(first), "half").connect()
    await joiner.pump_until(lambda: str(joiner.text) == "hello?")
    assert await stored_text("half") == "hello?"
    assert str(first.rooms["half"].doc.get("text", type=Text)) == "hello?"
    for peer in (good, remote, joiner):
        await peer.close()


async def test_worker_at_its_connection_limit_refuses_with_1013(redis_server):
    async with running_registry(redis_server, max_connections=2) as registry:
        peers = [await Peer(application(registry), "full").connect() for _ in range(2)]
        third = Peer(application(registry), "full")
        connected, _ = await third.communicator.connect(timeout=5)
        assert connected
        await third.pump_until(lambda: third.close_code is not None)
        assert third.close_code == 1013
        await peers[0].close()
        fourth = await Peer(application(registry), "full").connect()  # a slot is free again
        for peer in (peers[1], fourth):
            await peer.close()


async def test_a_connection_over_its_message_rate_is_closed_with_4429_and_its_peers_go_on(
    redis_server,
):
    # No refill within the test: the burst of five is all it gets.
    async with running_registry(redis_server, rate_per_second=0.1, rate_burst=5) as registry:
        peer = await Peer(application(registry), "rated").connect()
        # Two frames of the burst of five: its SyncStep1, and SyncStep2 answering the server's.
        flooder = await Peer(application(registry), "rated").connect()
        for _ in range(3):  # the rest of the burst: accepted
            await flooder.send_raw(b"\x03")
        await flooder.drain(0.2)
        assert flooder.close_code is None
        await flooder.send_raw(b"\x03")
        await flooder.pump_until(lambda: flooder.close_code is not None)
        assert flooder.close_code == 4429

        peer.text.insert(0, "still here")
        await peer.push()
        other = await Peer(application(registry), "rated").connect()
        await other.pump_until(lambda: str(other.text) == "still here")
        for client in (peer, other):
            await client.close()


async def test_refused_update_that_left_structs_waiting_is_dropped_by_reloading_the_room(
    two_processes,
):
    first, second = two_processes
    author = Doc(client_id=1)
    author.get("text", type=Text).insert(0, "hello")
    good = await Peer(application(first), "rebuilt").connect()
    remote = await Peer(application(second), "rebuilt").connect()
    good.doc.apply_update(author.get_update())
    await good.push()
    await remote.pump_until(lambda: str(remote.text) == "hello")
    room = first.rooms["rebuilt"]
    damaged_doc = room.doc
    rebuilds = metrics.ROOM_REBUILDS._value.get()

    bad = await Peer(application(first), "rebuilt").connect()
    await bad.send_raw(create_update_message(REFUSED_UPDATE_WITH_A_WAITING_STRUCT))
    await bad.pump_until(lambda: bad.close_code is not None)
    # Edits on both processes while the room is being reloaded: the local one waits for
    # the new Doc, the remote one's event waits in the buffer; neither may be lost.
    good.text.insert(0, "<")
    remote.text += ">"
    await good.push()
    await remote.push()
    await first.settled(room)

    assert bad.close_code == 4400
    assert room.doc is not damaged_doc and not room.damaged
    assert metrics.ROOM_REBUILDS._value.get() == rebuilds + 1
    for peer in (good, remote):
        await peer.pump_until(lambda peer=peer: str(peer.text) == "<hello>")
    joiner = await Peer(application(first), "rebuilt").connect()
    await joiner.pump_until(lambda: str(joiner.text) == "<hello>")
    assert await stored_text("rebuilt") == "<hello>"  # no "B" anywhere
    assert str(room.doc.get("text", type=Text)) == "<hello>"
    for peer in (good, remote, joiner):
        await peer.close()


async def test_an_update_depending_on_what_the_room_lacks_is_dropped_and_its_client_asked(
    redis_server,
):
    async with running_registry(redis_server) as registry:
        writer = await Peer(application(registry), "waiting").connect()
        watcher = await Peer(application(registry), "waiting").connect()
        writer.text.insert(0, "hello")
        writer.text.insert(5, "!")
        del writer._outbox[0]  # "hello" never reaches the server: "!" depends on it
        rebuilds = metrics.ROOM_REBUILDS._value.get()
        await writer.push()
        room = registry.rooms["waiting"]

        # The room drops "!" with its old Doc, then asks the writer (which stays connected)
        # for what it lacks; the writer's answer brings "hello" and "!" together.
        await writer.pump_until(lambda: str(room.doc.get("text", type=Text)) == "hello!")
        await watcher.pump_until(lambda: str(watcher.text) == "hello!")

        assert writer.close_code is None
        assert metrics.ROOM_REBUILDS._value.get() == rebuilds + 1
        assert await stored_text("waiting") == "hello!"
        for peer in (writer, watcher):
            await peer.close()


async def test_a_connection_that_keeps_sending_updates_the_room_cannot_use_is_closed(
    two_processes,
):
    first, _ = two_processes
    hostile = await Peer(application(first), "hoarded").connect()
    author = Doc(client_id=77)
    text = author.get("text", type=Text)
    text.insert(0, "x")
    for index in range(MAX_WAITING_UPDATES + 1):
        gap = author.get_state()
        text.insert(1 + index, "y")  # each depends on "x", which the room never gets
        assert hostile.close_code is None
        await hostile.send_raw(create_update_message(author.get_update(gap)))
        await hostile.drain(0.05)

    await hostile.pump_until(lambda: hostile.close_code is not None)
    assert hostile.close_code == 4400
    assert await stored_text("hoarded") == ""  # nothing of them was stored


async def test_a_stored_document_yrs_cannot_apply_whole_is_served_as_far_as_it_applies(
    two_processes, caplog
):
    first, _ = two_processes
    author = Doc(client_id=1)
    author.get("text", type=Text).insert(0, "hello")
    # "hello", then a valid "!" followed by a struct whose parent is a character: yrs
    # keeps "!" and refuses the rest, in every process that loads the log.
    half_valid = bytes.fromhex("0102010504010474657874 012108000101017d0100".replace(" ", ""))
    await AsyncStore(DocumentStore(using="postgres")).append(
        {"corrupt": [author.get_update(), half_valid]}
    )

    joiner = await Peer(application(first), "corrupt").connect()
    await joiner.pump_until(lambda: str(joiner.text) == "!hello")

    assert joiner.close_code is None
    assert "stored document corrupt does not apply whole" in caplog.text
    await joiner.close()
