"""Hostile frames over real sockets: a gunicorn editor (two workers, PostgreSQL, Redis) and a
gateway in front of it, with watchers on every document.

Frames are whole, or split into WebSocket fragments (websockets sends an iterable as one
fragmented message), binary or text, up to twice the frame limit and a few beyond it. Only
frames whose verdict does not depend on the document's content are used here (the in-process
fuzz covers the rest with an exact room state), so that concurrent attackers stay
deterministic; among them updates that wait for changes nobody has, updates yrs refuses
after taking in part of them and ones that make yrs panic, after each of which the editor
rebuilds the room from the store while the others keep editing. Each connection sends
frames the service accepts or drops (updates that wait keep it open up to the ninth: it
is then asked, with a SyncStep1, for what the room lacks), then usually one it must
refuse, and must be closed with exactly the oracle's code; some send nothing but updates
that wait, and the ninth closes them. Meanwhile the watchers keep editing and must stay
connected and converge; afterwards a fresh client, the stored state
(GET /api/docs/<id>/state) and the watchers hold the same document, the editor counted
exactly one rebuild for each frame that forced one (no watcher edit was dropped), and no
worker died.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import websockets
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.fuzz import stats
from tests.fuzz.frames import (
    MAX_FRAME_BYTES,
    MAX_WAITING_UPDATES,
    SCALE,
    HalfValid,
    Verdict,
    classify,
    frame_strategy,
    generate,
    half_valid_update,
    same_document,
    seeded_frames,
    state_of,
    update_frame,
    update_pool,
    waiting_updates,
)
from tests.fuzz.live import (
    EDITOR_LIMITS,
    http_get,
    raw_socket,
    stored_state,
    worker_pids,
)
from tests.support.processes import EditorInstance, GatewayInstance
from tests.support.yclient import YClient, wait_until

DOCUMENTS = 3
ATTACKERS = 6
MESSAGE_TOO_BIG = 1009  # the server's own cut-off, above twice the frame limit


def content_independent(candidates: list[Any]) -> list[tuple[bytes | str, Verdict]]:
    """(frame, verdict) for frames whose verdict is the same on an empty and a full document."""
    full = state_of(update_pool())
    chosen: list[tuple[bytes | str, Verdict]] = []
    for frame in candidates:
        if isinstance(frame, HalfValid):
            continue  # built against the room's clocks: content-dependent by design
        empty = classify(frame, room_state=b"\x00\x00", size_bytes=0)
        filled = classify(frame, room_state=full, size_bytes=len(full))
        if empty != filled:
            continue
        if empty.code is None and len(frame) > 10_000:
            # Big accepted updates: the size cap makes them depend on the document
            # (tests/abuse/test_sizes.py); they would also grow it past what a gateway relays.
            continue
        chosen.append((frame, empty))
    return chosen


# (frame, its close code, its verdict): no verdict for the pool's updates sent in order.
Script = list[tuple[Any, int | None, Verdict | None]]


def scripts(frames: list[tuple[bytes | str, Verdict]]) -> list[Script]:
    """Connections' scripts: frames it keeps (some dropped as they wait), then (usually)
    one that must close it."""
    result: list[Script] = []
    current: Script = []
    waited = 0
    for frame, verdict in frames:
        code = verdict.close_code(waited)
        waited += verdict.waits
        current.append((frame, code, verdict))
        if code is not None or len(current) >= 20:
            result.append(current)
            current, waited = [], 0
    if current:
        result.append(current)
    return result


def fragments(frame: bytes | str, rng: random.Random) -> list[Any]:
    """The frame cut into 2-6 fragments (some empty) of one fragmented WebSocket message."""
    if len(frame) < 2:
        return [frame, frame[:0]]
    cuts = sorted(rng.sample(range(len(frame) + 1), k=min(len(frame), rng.randrange(1, 6))))
    return [frame[start:end] for start, end in zip([0, *cuts], [*cuts, len(frame)], strict=True)]


class Attack:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.frames = 0
        self.fragmented = 0
        self.connections = 0
        self.asked = 0  # SyncStep1 frames asking a sender again, after its update waited
        self.codes: dict[int | None, int] = {}
        self.mismatches: list[str] = []

    async def run_script(self, url: str, script: Script, *, direct: bool) -> None:
        """One connection's script; `direct`: straight to the editor, not through the gateway."""
        ws = await raw_socket(url)
        self.connections += 1
        last, expected, _ = script[-1]
        split = False
        try:
            for frame, _, _ in script:
                split = self.rng.random() < 0.25
                if split:
                    await ws.send(fragments(frame, self.rng))
                    self.fragmented += 1
                else:
                    await ws.send(frame)
                self.frames += 1
        except Exception:  # the server may close while we are still sending: judged below
            pass
        step1s = 0  # the greeting, and one for each update dropped as it waited
        code: int | None = None
        try:
            if expected is None:
                # Nothing refused: the socket must still answer a SyncStep1 with a SyncStep2.
                await ws.send(b"\x00\x00\x01\x00")
            async with asyncio.timeout(10):
                while True:
                    reply = await ws.recv()
                    if isinstance(reply, bytes) and reply[:2] == b"\x00\x00":
                        step1s += 1
                    elif expected is None and isinstance(reply, bytes) and reply[:2] == b"\x00\x01":
                        break
        except websockets.ConnectionClosed:
            code = ws.close_code
        except TimeoutError:
            code = None if expected is not None else -1  # still open, or no answer
        await ws.close()
        self.codes[code] = self.codes.get(code, 0) + 1
        if code != expected:
            path = stats.save_finding("socket-code", last)
            self.mismatches.append(
                f"{url}: closed with {code} ({ws.close_reason!r}), expected {expected}; "
                f"last frame{' (in fragments)' if split else ''} in {path.name}, "
                f"after {len(script) - 1} frames it kept"
            )
            return
        # Each update the room dropped, but the last if it closed the connection, asks
        # its sender again once the room is rebuilt, and the next binary frame waits for
        # that: those SyncStep1 arrive before our SyncStep2 or the close. A text frame
        # closes without waiting (the last may be cut off); a frame over the server's
        # message limit, or a socket the gateway closes itself, may cut off any of them.
        dropped = sum(
            bool(verdict and verdict.waits) for _, code, verdict in script if code is None
        )
        self.asked += max(0, step1s - 1)
        least = 1 + dropped
        if expected is not None and (not direct or expected == MESSAGE_TOO_BIG):
            least = 0
        elif expected is not None and isinstance(last, str):
            least = dropped
        if not least <= step1s <= 1 + dropped:
            path = stats.save_finding("socket-asked", last)
            self.mismatches.append(
                f"{url}: {step1s} SyncStep1 (the greeting included) for {dropped} updates "
                f"dropped as they waited, closed with {code} (last frame in {path.name})"
            )

    async def worker(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            try:
                url, script, direct = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self.run_script(url, script, direct=direct)


@pytest.mark.timeout(400, method="thread")
async def test_hostile_frames_over_real_sockets_close_only_their_connection(
    editors, gateways, pg_database, redis_server
):
    editor = EditorInstance(
        "fuzz-editor",
        database_url=pg_database.url,
        redis_url=redis_server.url,
        workers=2,
        extra_env=EDITOR_LIMITS,
    )
    editors.append(editor)
    editor.start()
    gateway = GatewayInstance(
        "fuzz-gateway",
        upstreams=[editor.base_url],
        extra_env={
            "GATEWAY_MAX_FRAME_BYTES": str(MAX_FRAME_BYTES),
            "GATEWAY_RATE_PER_SECOND": "100000",
            "GATEWAY_RATE_BURST": "100000",
            # The editor is saturated on purpose: a slow /readyz must not make the gateway
            # refuse new sessions (1013) in the middle of the run.
            "GATEWAY_HEALTH_TIMEOUT_SECONDS": "10",
        },
    )
    gateways.append(gateway)
    gateway.start()
    pids = worker_pids(editor)
    assert len(pids) == 2

    rng = random.Random(5)
    candidates: list[Any] = list(seeded_frames(seed=11, count=int(7_000 * SCALE)))
    candidates += generate(frame_strategy(), int(400 * SCALE) or 1, seed=3)
    candidates += generate(st.text(max_size=64), int(100 * SCALE) or 1, seed=4)
    candidates += [b"\x00\x02" + b"\x00" * (MAX_FRAME_BYTES + 1)] * 10  # over the limit: 4413
    # Refused, whatever the document, after yrs took in part of them and left the rest
    # outside the document: each makes the editor rebuild the room from the store (without
    # any of it) while the watchers edit.
    candidates += [
        update_frame(half_valid_update(0, "q", 0, client=client))
        for client in range(5_000, 5_000 + (int(200 * SCALE) or 1))
    ]
    candidates += [b"\x00\x02" + b"\x00" * (2 * MAX_FRAME_BYTES + 1)] * 5  # over twice: 1009
    accepted = [update_frame(update) for update in update_pool()] + [b"\x03", b"\x00\x00\x01\x00"]
    candidates += accepted * 3
    rng.shuffle(candidates)
    plans = scripts(content_independent(candidates))
    # Connections that send nothing but updates that wait, whatever the document: each is
    # asked again for the first eight and closed at the ninth.
    hoard = [update_frame(update) for update in waiting_updates(MAX_WAITING_UPDATES + 1)]
    plans += [
        scripts(
            [(frame, classify(frame, room_state=b"\x00\x00", size_bytes=0)) for frame in hoard]
        )[0]
    ] * (2 * DOCUMENTS)
    plans += [[(frame, None, None) for frame in accepted]] * DOCUMENTS
    for script in plans:
        for index, (frame, code, verdict) in enumerate(script):
            if isinstance(frame, bytes) and len(frame) > 2 * MAX_FRAME_BYTES and code == 4413:
                script[index] = (frame, MESSAGE_TOO_BIG, verdict)
    rebuilding = sum(
        bool(verdict and verdict.damages) for script in plans for *_, verdict in script
    )

    doc_ids = [f"socket-fuzz-{index}" for index in range(DOCUMENTS)]
    watchers = []
    for doc_id in doc_ids:
        for base in (editor.ws_url, editor.ws_url, gateway.ws_url):
            watchers.append(await YClient(f"{base}/{doc_id}").connect())
    attack = Attack(rng)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for index, script in enumerate(plans):
        direct = index % 4 != 3
        base = editor.ws_url if direct else gateway.ws_url
        queue.put_nowait((f"{base}/{doc_ids[index % DOCUMENTS]}", script, direct))

    edits = 0

    async def keep_editing() -> None:
        nonlocal edits
        while True:
            for watcher in watchers[::3]:
                watcher.insert(f"e{edits};")
                edits += 1
            await asyncio.sleep(0.05)

    editing = asyncio.create_task(keep_editing())
    try:
        await asyncio.gather(*(attack.worker(queue) for _ in range(ATTACKERS)))
    finally:
        editing.cancel()
    stats.record("socket frames (editor and gateway)", attack.frames)
    stats.record("socket frames sent as fragments", attack.fragmented)
    stats.record("socket connections (fuzz)", attack.connections)
    stats.record("socket frames that make the editor rebuild a room", rebuilding)
    stats.record("socket senders asked again after an update that waited", attack.asked)
    rebuilt = 0
    # A watcher is asked again (a SyncStep1 after its greeting) only if an edit of its was
    # dropped; watchers never reconnect, so none may be (tests/fuzz/README.md bug 12).
    watchers_asked = 0

    async def all_rebuilt() -> bool:
        nonlocal rebuilt, watchers_asked
        rebuilt = await rooms_rebuilt(editor)
        watchers_asked = sum(
            sum(frame[:2] == b"\x00\x00" for frame in watcher.received_frames) - 1
            for watcher in watchers
        )
        return rebuilt >= rebuilding

    deadline = asyncio.get_running_loop().time() + 15
    while not await all_rebuilt() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    stats.record("watcher edits dropped after a rebuild (socket)", watchers_asked)
    report = (
        f"{attack.frames} frames ({attack.fragmented} fragmented) on {attack.connections} "
        f"connections, close codes {attack.codes}, {rebuilding} of them forcing a rebuild "
        f"from the store ({rebuilt} rebuilds counted by the editor, {watchers_asked} watcher "
        f"edits dropped), {attack.asked} SyncStep1 asking a sender again, "
        f"{edits} watcher edits"
    )
    print(report)
    assert not attack.mismatches, "\n".join(attack.mismatches[:20])
    assert attack.frames >= 5_000 * SCALE, report
    assert {4400, 4413, MESSAGE_TOO_BIG, None} <= set(attack.codes), report
    assert rebuilding > 0 and attack.asked > 0, report
    assert rebuilt == rebuilding and watchers_asked == 0, report

    # Nobody but the attackers was closed, every worker is the one we started with.
    assert not [w for w in watchers if w.closed.is_set()], "a watcher was closed"
    assert worker_pids(editor) == pids, "an editor worker died (and was replaced)"
    for index, doc_id in enumerate(doc_ids):
        group = watchers[3 * index : 3 * index + 3]
        await wait_until(
            lambda group=group: all(
                same_document(group[0].doc.get_update(), w.doc.get_update()) for w in group
            ),
            timeout=15,
            what=f"the watchers of {doc_id} to converge",
        )
        fresh = await YClient(f"{editor.ws_url}/{doc_id}").connect()
        stored = await stored_state(editor.base_url, doc_id)
        state = group[0].doc.get_update()
        assert same_document(state, fresh.doc.get_update()), f"a fresh client of {doc_id} differs"
        assert same_document(state, stored), f"the stored state of {doc_id} differs"
        await fresh.close()
    for watcher in watchers:
        await watcher.close()


async def rooms_rebuilt(editor: EditorInstance) -> int:
    """collab_room_rebuilds_total of the editor (all its workers)."""
    response = await http_get(f"{editor.base_url}/metrics")
    assert response.status_code == 200, response.status_code
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "collab_room_rebuilds_total"
        )
    )
