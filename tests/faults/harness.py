"""The editing run every fault test shares: a cluster, writers through it, convergence checks.

A run is two editor instances (two gunicorn workers each) sharing one Redis and one
PostgreSQL database, a gateway in front of them, and `ResilientWriter`s editing one
document through the gateway. Faults are injected by the tests; this module measures
what they care about:

- `converge_after`: the seconds until every writer is back online and holds every
  token inserted (by anyone) before the fault: the time to converge after it;
- `final_check`: editing stops, then every token ever inserted must be present exactly
  once in every writer and in the stored document (`GET /api/docs/<id>/state`); the
  run's figures are written to `test-artifacts/faults/<test>.json`. When writers do
  not converge, the failure says for each missing token whether it is stored and
  whether the writer ever received it, and dumps the writer's document, the frames it
  received and the stored state next to the figures;
- a monitor notes when each token has reached each writer and every writer: `window`
  reports the median and slowest propagation of the inserts made during a phase of the
  run, and `pair_delays` the delay from each writer to each other one, grouped by
  where both were connected (same process, same editor, across editors);
- `assert_idle`: once every client has left, no editor holds a connection or a room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Doc, Text
from redis import asyncio as aioredis

from tests.support.processes import ARTIFACTS, EditorInstance, GatewayInstance
from tests.support.resilient import ResilientWriter, split_tokens
from tests.support.yclient import YClient

# The promise under test: after a fault, everyone converges within this many seconds.
CONVERGENCE_BOUND_SECONDS = 5.0
# How long the final check waits; generous, the promise is checked per fault.
FINAL_TIMEOUT_SECONDS = 20.0


# Processes ----------------------------------------------------------------------------


async def start_editors(
    editors: list[EditorInstance],
    database_url: str,
    redis_url: str,
    *,
    count: int = 2,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
) -> list[EditorInstance]:
    """Start `count` editor instances at once (registered in `editors` for clean-up)."""
    started = [
        EditorInstance(
            f"faults-editor-{index}",
            database_url=database_url,
            redis_url=redis_url,
            workers=workers,
            extra_env=extra_env,
        )
        for index in range(count)
    ]
    editors.extend(started)
    await asyncio.gather(*(asyncio.to_thread(instance.start, 60) for instance in started))
    return started


async def start_gateway(
    gateways: list[GatewayInstance], upstreams: list[EditorInstance], name: str = "faults-gateway"
) -> GatewayInstance:
    gateway = GatewayInstance(name, upstreams=[editor.base_url for editor in upstreams])
    gateways.append(gateway)
    await asyncio.to_thread(gateway.start, 30)
    return gateway


async def get(url: str, timeout: float = 10) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await client.get(url)


async def readyz(instance: EditorInstance | GatewayInstance) -> tuple[int, dict[str, Any]]:
    """Status and body of the instance's /readyz (its timeout is 2 s per failing check)."""
    response = await get(f"{instance.base_url}/readyz")
    return response.status_code, response.json()


async def wait_for_readiness(
    instance: EditorInstance | GatewayInstance, status: int, *, timeout: float, what: str
) -> float:
    """Poll /readyz until it answers `status`; the seconds it took."""
    started = time.monotonic()
    last: tuple[int, Any] = (0, None)
    while time.monotonic() - started < timeout:
        try:
            last = await readyz(instance)
        except httpx.HTTPError as error:
            last = (0, repr(error))
        if last[0] == status:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: /readyz of {instance.base_url} still {last} after {timeout}s")


async def wait_gateway_sees(gateway: GatewayInstance, healthy: int, timeout: float = 30) -> None:
    """Wait until the gateway counts `healthy` ready editors."""
    started = time.monotonic()
    body: Any = None
    while time.monotonic() - started < timeout:
        try:
            body = (await get(f"{gateway.base_url}/readyz")).json()
            if body["healthy_upstreams"] == healthy:
                return
        except (httpx.HTTPError, ValueError, KeyError) as error:
            body = repr(error)
        await asyncio.sleep(0.1)
    raise AssertionError(f"gateway never saw {healthy} healthy editors: {body}")


def worker_pids(instance: EditorInstance) -> list[int]:
    """The gunicorn workers of an instance: the children of its master process."""
    assert instance.process is not None
    master = instance.process.pid
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == master and fields[0] != "Z":
            children.append(int(entry))
    return sorted(children)


def established_connections(pid: int, port: int) -> int:
    """TCP connections accepted on `port` that process `pid` holds (from /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            if local_port == port and parts[3] == "01":  # 01: ESTABLISHED
                inodes.add(parts[9])
    held = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held += 1
    return held


async def wait_for_workers(instance: EditorInstance, count: int, timeout: float = 30) -> list[int]:
    """Wait until the instance has `count` live workers again and answers /healthz."""
    started = time.monotonic()
    pids: list[int] = []
    while time.monotonic() - started < timeout:
        pids = worker_pids(instance)
        if len(pids) == count:
            try:
                if (await get(f"{instance.base_url}/healthz", timeout=2)).status_code == 200:
                    return pids
            except httpx.HTTPError:
                pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{instance.name} has workers {pids}, not {count}, after {timeout}s")


def kill_worker(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


async def group_subscriptions(redis_url: str) -> int:
    """Subscriptions to document groups on Redis (channels-redis: `*__group__*` channels)."""
    client = aioredis.from_url(redis_url)
    try:
        channels = await client.pubsub_channels("*__group__*")
        if not channels:
            return 0
        return sum(count for _, count in await client.pubsub_numsub(*channels))
    finally:
        await client.aclose()


async def load_gauges(instance: EditorInstance) -> dict[str, float]:
    """The instance's open WebSocket connections and loaded rooms (all workers)."""
    response = await get(f"{instance.base_url}/metrics")
    assert response.status_code == 200, response.status_code
    found = {"collab_connections": 0.0, "collab_rooms": 0.0}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name] += sample.value
    return found


async def idle_report(instances: list[EditorInstance], timeout: float = 10) -> dict[str, Any]:
    """Wait until no editor holds a connection or a room (every client has left).

    Returns {} once idle, else what each instance still holds after `timeout`.
    """
    started = time.monotonic()
    while True:
        held = {}
        for instance in instances:
            if instance.process is None:
                continue
            gauges = await load_gauges(instance)
            if any(gauges.values()):
                held[instance.name] = gauges
        if not held or time.monotonic() - started > timeout:
            return held
        await asyncio.sleep(0.2)


async def assert_idle(instances: list[EditorInstance], timeout: float = 10) -> None:
    """Once every client has left, no editor may hold a connection or a room (DESIGN 6)."""
    held = await idle_report(instances, timeout)
    assert not held, f"{timeout}s after every client left, editors still hold {held}"


def state_vector(encoded: bytes) -> dict[int, int]:
    """Decode a Yjs state vector (varuint count, then client/clock varuint pairs)."""
    numbers: list[int] = []
    value = shift = 0
    for byte in encoded:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            numbers.append(value)
            value = shift = 0
    count, pairs = numbers[0], numbers[1:]
    return {pairs[2 * i]: pairs[2 * i + 1] for i in range(count)}


# Stored state -------------------------------------------------------------------------


async def stored_tokens(instance: EditorInstance, doc_id: str) -> Counter[str]:
    """Tokens of the stored document, read through an editor's HTTP API."""
    response = await get(f"{instance.base_url}/api/docs/{doc_id}/state")
    assert response.status_code == 200, (response.status_code, response.text[:300])
    doc: Doc[Any] = Doc()
    doc.apply_update(response.content)
    return Counter(split_tokens(str(doc.get("text", type=Text))))


# The run ------------------------------------------------------------------------------


@dataclass
class Run:
    """Writers editing one document; the figures of the run."""

    name: str
    doc_id: str
    writers: list[ResilientWriter]
    figures: dict[str, Any] = field(default_factory=dict)
    # token -> the first time the monitor saw it in every writer
    everywhere_at: dict[str, float] = field(default_factory=dict)
    # writer -> token -> the first time the monitor saw the token in that writer
    seen_at: dict[str, dict[str, float]] = field(default_factory=dict)
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    _monitor: asyncio.Task[None] | None = None

    @classmethod
    def begin(
        cls,
        name: str,
        doc_id: str,
        urls_per_writer: list[list[str]],
        *,
        interval: float = 0.1,
    ) -> Run:
        writers = [
            ResilientWriter(f"w{index}", urls, interval=interval, seed=index).start()
            for index, urls in enumerate(urls_per_writer)
        ]
        run = cls(name, doc_id, writers)
        run._monitor = asyncio.create_task(run._watch())
        return run

    async def _watch(self) -> None:
        """Note when each token has reached each writer, and every writer (every 50 ms)."""
        while True:
            held = [set(writer.tokens()) for writer in self.writers]
            now = time.monotonic()
            for writer, tokens in zip(self.writers, held, strict=True):
                seen = self.seen_at.setdefault(writer.name, {})
                for token in tokens.difference(seen):
                    seen[token] = now
            for token in set.intersection(*held).difference(self.everywhere_at):
                self.everywhere_at[token] = now
            await asyncio.sleep(0.05)

    def window(self, label: str, since: float, until: float) -> None:
        """Report how long inserts made in [since, until) took to reach every writer."""
        self.windows.append((label, since, until))

    def _propagation(self, since: float, until: float) -> dict[str, Any]:
        inserted_at = {t: at for w in self.writers for t, at in w.inserted_at.items()}
        delays = sorted(
            (self.everywhere_at[token] - at, token)
            for token, at in inserted_at.items()
            if since <= at < until and token in self.everywhere_at
        )
        if not delays:
            return {"inserts": 0}
        slowest, token = delays[-1]
        return {
            "inserts": len(delays),
            "median_seconds": round(delays[len(delays) // 2][0], 3),
            "max_seconds": round(slowest, 3),
            # the slowest insert: when it was made and when it was everywhere,
            # in seconds from the start of the window
            "slowest": [token, round(inserted_at[token] - since, 3), round(slowest, 3)],
        }

    def pair_delays(self, since: float, until: float) -> dict[str, list[float]]:
        """Writer-to-writer propagation of the inserts made in [since, until), by placement.

        For each insert made online and each other writer online when it was made, the
        seconds until that writer held it; one still missing at `until` counts as
        `until` minus the insert time (a lower bound of its delay), so that a stall
        cannot hide behind the end of the phase. Pairs are grouped as `same_process`
        (both straight on one server process), `same_editor` (one editor instance,
        process not known or different) and `across_editors`.
        """
        grouped: dict[str, list[float]] = {
            "same_process": [],
            "same_editor": [],
            "across_editors": [],
        }
        for author in self.writers:
            for token, at in author.inserted_at.items():
                placed = author.inserted_on.get(token)
                if not since <= at < until or placed is None:
                    continue
                for receiver in self.writers:
                    there = _placement_at(receiver, at)
                    if receiver is author or there is None:
                        continue
                    if placed[1] and placed[1] == there[1]:
                        group = "same_process"
                    elif placed[0] == there[0]:
                        group = "same_editor"
                    else:
                        group = "across_editors"
                    arrived = self.seen_at.get(receiver.name, {}).get(token, until)
                    grouped[group].append(max(0.0, min(arrived, until) - at))
        return grouped

    @staticmethod
    def summarize(delays: list[float]) -> dict[str, Any]:
        if not delays:
            return {"pairs": 0}
        ordered = sorted(delays)
        return {
            "pairs": len(ordered),
            "median_seconds": round(ordered[len(ordered) // 2], 3),
            "p99_seconds": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
            "max_seconds": round(ordered[-1], 3),
        }

    def inserted(self) -> set[str]:
        """Every token any writer has inserted so far."""
        return {token for writer in self.writers for token in writer.inserted}

    def checkpoint(self) -> set[str]:
        """What convergence after a fault means: the tokens due in every writer.

        Every token inserted before the fault, plus the next token each editing writer
        inserts after it: a writer whose socket the fault broke counts as converged only
        once its edits and everyone else's flow again, not merely because it already
        held everything from before.
        """
        due = self.inserted()
        due.update(f"{w.name}.{len(w.inserted)}" for w in self.writers if w.editing)
        return due

    def record(self, key: str, value: Any) -> None:
        self.figures.setdefault(key, []).append(value)

    def on(self, upstream: str) -> list[ResilientWriter]:
        """Writers connected right now through the gateway to the editor `upstream`."""
        return [w for w in self.writers if w.online and w.current_upstream == upstream]

    def through(self, gateway: GatewayInstance) -> list[ResilientWriter]:
        """Writers connected right now through `gateway`."""
        return [w for w in self.writers if w.online and w.url.startswith(gateway.ws_url + "/")]

    def busiest(self, instances: list[EditorInstance]) -> EditorInstance:
        """The instance most writers are connected to right now."""
        return max(instances, key=lambda instance: len(self.on(instance.base_url)))

    def disconnect_count(self) -> int:
        return sum(len(writer.disconnects) for writer in self.writers)

    async def all_online(self, timeout: float = 15) -> None:
        for writer in self.writers:
            await writer.wait_online(timeout)

    def _missing(self, due: set[str]) -> dict[str, Any]:
        report = {}
        for writer in self.writers:
            lacking = due - set(writer.tokens())
            if lacking or not writer.online:
                report[writer.name] = {
                    "online": writer.online,
                    "missing": len(lacking),
                    "examples": sorted(lacking)[:5],
                }
        return report

    async def converge_after(
        self,
        started: float,
        due: set[str],
        *,
        what: str,
        bound: float = CONVERGENCE_BOUND_SECONDS,
        record: str | None = "convergence_seconds",
    ) -> float:
        """Wait until every writer is online and holds `due`; seconds since `started`.

        Fails as soon as the bound is exceeded, naming who lacks what.
        """
        while True:
            if not self._missing(due):
                took = time.monotonic() - started
                if record is not None:
                    self.record(record, round(took, 3))
                return took
            if time.monotonic() - started > bound:
                raise AssertionError(
                    f"{self.name}: no convergence within {bound}s after {what}; "
                    f"{len(due)} tokens due; lagging writers: {self._missing(due)}"
                )
            await asyncio.sleep(0.02)

    async def final_check(self, stores: list[EditorInstance]) -> None:
        """Stop editing; every inserted token exactly once in every writer and in the store."""
        for writer in self.writers:
            await writer.stop_editing()
        expected = self.inserted()
        started = time.monotonic()
        try:
            await self.converge_after(
                started,
                expected,
                what="editing stopped (final check)",
                bound=FINAL_TIMEOUT_SECONDS,
                record=None,
            )
        except AssertionError as error:
            diagnosis = await self.diagnose(expected, stores)
            raise AssertionError(f"{error}\ndiagnosis: {json.dumps(diagnosis)}") from None
        self.figures["final_convergence_seconds"] = round(time.monotonic() - started, 3)
        await asyncio.sleep(0.15)  # the monitor notes the last arrivals
        self.figures["propagation"] = {
            label: self._propagation(since, until) for label, since, until in self.windows
        }
        for writer in self.writers:
            counts = writer.token_counts()
            duplicated = {token: n for token, n in counts.items() if n > 1}
            unknown = set(counts) - expected
            assert not duplicated, f"{writer.name} holds duplicated inserts: {duplicated}"
            assert not unknown, f"{writer.name} holds tokens nobody inserted: {sorted(unknown)}"
            assert set(counts) == expected
        for instance in stores:
            stored = await stored_tokens(instance, self.doc_id)
            lost = expected - set(stored)
            duplicated = {token: n for token, n in stored.items() if n > 1}
            assert not lost, (
                f"{len(lost)} inserts the writers hold are not in the stored document "
                f"(read via {instance.base_url}): {sorted(lost)[:20]}"
            )
            assert not duplicated, f"the stored document holds duplicates: {duplicated}"
            assert set(stored) == expected
        self.figures.update(
            inserts_checked=len(expected),
            writers=len(self.writers),
            disconnects=self.disconnect_count(),
            connects=sum(writer.connects for writer in self.writers),
            failed_connection_attempts=sum(writer.failed_attempts for writer in self.writers),
            lost=0,
        )
        self.save()

    async def diagnose(self, expected: set[str], stores: list[EditorInstance]) -> dict[str, Any]:
        """Where the inserts some writers lack went: stored? ever received by them?"""
        stored: set[str] = set()
        for instance in stores:
            if instance.process is not None:
                stored |= set(await stored_tokens(instance, self.doc_id))
                response = await get(f"{instance.base_url}/api/docs/{self.doc_id}/state")
                folder = ARTIFACTS / "faults"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{self.name}-stored.bin").write_bytes(response.content)
        report: dict[str, Any] = {}
        clocks = {
            w.name: state_vector(w.doc.get_state()).get(w.doc.client_id, 0) for w in self.writers
        }
        for writer in self.writers:
            lacking = sorted(expected - set(writer.tokens()))
            if not lacking:
                continue
            held = state_vector(writer.doc.get_state())
            dump = ARTIFACTS / "faults" / f"{self.name}-{writer.name}"
            dump.mkdir(parents=True, exist_ok=True)
            (dump / "doc.bin").write_bytes(writer.doc.get_update())
            (dump / "frames.bin").write_bytes(
                b"".join(len(f).to_bytes(4, "big") + f for f in writer.received_frames)
            )
            report[writer.name] = {
                "state_vector": {str(k): v for k, v in held.items()},
                "client_ids": {w.name: str(w.doc.client_id) for w in self.writers},
                # how far this copy has integrated each writer's own edits (Yjs clocks)
                "clocks_integrated": {
                    w.name: [held.get(w.doc.client_id, 0), clocks[w.name]] for w in self.writers
                },
                "unknown_tokens": sorted(set(writer.tokens()) - expected)[:6],
                "editor": writer.current_upstream,
                "url": writer.url,
                "online": writer.online,
                "disconnects": len(writer.disconnects),
                "lacking": {
                    token: {
                        "stored": token in stored,
                        # Yjs encodes strings verbatim: was it in any frame it received?
                        "received": any(
                            (token + ";").encode() in frame for frame in writer.received_frames
                        ),
                    }
                    for token in lacking[:6]
                },
            }
        return report

    def save(self) -> None:
        folder = ARTIFACTS / "faults"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.name}.json").write_text(json.dumps(self.figures, indent=2) + "\n")
        print(f"{self.name}: {json.dumps(self.figures)}")

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for writer in self.writers:
            await writer.close()


def _placement_at(writer: ResilientWriter, at: float) -> tuple[str, str] | None:
    """(editor, process) serving `writer` at time `at`, or None if it was offline then.

    Known exactly only for a writer connected since before `at` (the case of a phase
    without disconnects, which is where placements are compared).
    """
    if not writer.online or writer.online_since > at:
        return None
    return writer.current_upstream, writer.current_process


async def affine_editor(
    gateway: GatewayInstance, doc_id: str, instances: list[EditorInstance]
) -> EditorInstance:
    """The editor the gateway routes `doc_id` to while every editor is healthy."""
    probe = await YClient(f"{gateway.ws_url}/{doc_id}").connect()
    try:
        return next(instance for instance in instances if instance.base_url == probe.upstream)
    finally:
        await probe.close()


async def begin_run(
    name: str,
    doc_id: str,
    instances: list[EditorInstance],
    gateways: list[GatewayInstance],
    *,
    through_gateway: int = 4,
    pinned: int = 2,
    interval: float = 0.1,
    warm_up: float = 1.5,
) -> Run:
    """Writers on one document, online and converged once before any fault.

    `through_gateway` writers connect through the gateways (taking turns between them
    on each reconnect, as behind a load balancer). `pinned` more first connect straight
    to the editor the gateway does *not* route the document to, so that both instances
    serve the document from the start (correctness never depends on affinity); after a
    close they take turns between that editor and the gateways.
    """
    gateway_urls = [f"{gateway.ws_url}/{doc_id}" for gateway in gateways]
    home = await affine_editor(gateways[0], doc_id, instances)
    other = next(instance for instance in instances if instance is not home)
    urls: list[list[str]] = []
    for index in range(through_gateway):
        shift = index % len(gateway_urls)
        urls.append(gateway_urls[shift:] + gateway_urls[:shift])
    for _ in range(pinned):
        urls.append([f"{other.ws_url}/{doc_id}", *gateway_urls])
    run = Run.begin(name, doc_id, urls, interval=interval)
    run.figures["home_editor"] = home.base_url
    await run.all_online()
    warm_up_at = time.monotonic()
    await asyncio.sleep(warm_up)
    started = time.monotonic()
    run.window("no_fault", warm_up_at, started)
    await run.converge_after(
        started, run.checkpoint(), what="warm-up (no fault yet)", record="warm_up_seconds"
    )
    return run
