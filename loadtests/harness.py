"""Reusable pieces of the load tests: services, a y-websocket load client, measurement.

Scenarios (e.g. `loadtests.gateway_cost`) put these together; nothing here knows about one.

- **Services**: an editor instance and a gateway as subprocesses on free loopback ports
  (the test suite's `tests.support.processes`), optionally pinned to CPUs with `taskset`,
  and a fresh database for them.
- **Load client**: `LoadClient` speaks y-websocket over `websockets` with a pycrdt `Doc`.
  Its inserts carry a `Stamp` (writer, sequence number, send time on CLOCK_MONOTONIC,
  which every process of the machine shares); every stamp a remote update brings in is
  recorded as an `Observation` with the time its frame was read.
- **Pacing**: `run_at_rate` calls an action on a fixed open-loop schedule and records how
  late each call started, so a generator that cannot keep up shows.
- **Measurement**: percentiles, CPU seconds of process trees and per-core busy time from
  /proc, event-loop lag of the generator, Prometheus text scraping, convergence checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import psycopg
import websockets
from pycrdt import (
    Doc,
    Text,
    TextEvent,
    TransactionEvent,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)
from websockets.asyncio.client import ClientConnection, connect

from tests.support.processes import EditorInstance, GatewayInstance, PostgresDatabase, run_manage

# --------------------------------------------------------------------------------------
# Stamps and the load client
# --------------------------------------------------------------------------------------

MESSAGE_SYNC = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2
_STAMP = re.compile(r"<([A-Za-z0-9_.-]+):(\d+):(\d+)>")


@dataclass(frozen=True, slots=True)
class Stamp:
    """One insert: who wrote it, its sequence number, and when (time.monotonic_ns())."""

    writer: str
    seq: int
    sent_ns: int

    def encode(self, padding: int = 0) -> str:
        """The text inserted into the document; `padding` dots follow the stamp."""
        return f"<{self.writer}:{self.seq}:{self.sent_ns}>" + "." * padding


def parse_stamps(text: str) -> list[Stamp]:
    """Every stamp in a piece of document text, in order (padding and other text ignored)."""
    return [Stamp(m[1], int(m[2]), int(m[3])) for m in _STAMP.finditer(text)]


@dataclass(frozen=True, slots=True)
class Observation:
    """A stamp seen arriving in a remote update, with the time its frame was read."""

    stamp: Stamp
    received_ns: int

    @property
    def latency_ns(self) -> int:
        return self.received_ns - self.stamp.sent_ns


class LoadClient:
    """One y-websocket connection holding a pycrdt Doc with a shared Text named "text".

    `insert_stamped()` appends a stamp to the text (or prepends it, with `prepend`) and
    sends the update at once (no outbox: the caller's pacing is the send time);
    `insert_stamped_batch()` sends several stamps as one update. Remote frames are applied
    as they are read; each stamp they insert becomes an `Observation` (unless `observe`
    is off). Frames and bytes are counted both ways, update frames apart. The client
    answers SyncStep1 as the y-websocket provider does; awareness frames are counted and
    ignored. `connect_ns` is the connect + sync time.
    """

    def __init__(
        self,
        url: str,
        writer: str,
        *,
        ping_interval: float | None = None,
        open_timeout: float = 10,
        observe: bool = True,
        prepend: bool = False,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", writer):
            raise ValueError(f"writer ids are [A-Za-z0-9_.-]+, not {writer!r}")
        self.url = url
        self.writer = writer
        self.ping_interval = ping_interval
        self.open_timeout = open_timeout
        # yrs finds a text index by walking its blocks, so an append costs time linear in
        # the number of inserts so far (~0.5 ms after 20,000); an insert at 0 stays ~10 µs.
        # Long runs prepend to keep the generator's cost flat; the CRDT does not care.
        self.prepend = prepend
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("text", type=Text)
        self.sent: list[Stamp] = []
        self.observations: list[Observation] = []
        self.frames_sent = 0
        self.frames_received = 0
        self.update_frames = 0  # document updates received (a server's echoes included)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.started_ns = 0  # when connect() began
        self.synced_ns = 0  # when the server's SyncStep2 was read
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.error: BaseException | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seq = 0
        self._remote_frame_ns: int | None = None  # set while a remote frame is applied
        self._local_updates: list[bytes] = []
        # Without `observe`, remote stamps are not recorded (a late joiner receiving a long
        # history needs only its length, not an Observation per stamp).
        self._subscriptions = [self.doc.observe(self._on_transaction)]
        if observe:
            self._subscriptions.append(self.text.observe(self._on_text))

    # -- connection -------------------------------------------------------------------

    async def connect(self, *, timeout: float = 10) -> LoadClient:
        """Open the socket, send SyncStep1 and wait for the server's SyncStep2."""
        self.started_ns = time.monotonic_ns()
        self._ws = await connect(
            self.url,
            compression=None,
            max_size=None,
            ping_interval=self.ping_interval,
            open_timeout=self.open_timeout,
            user_agent_header=None,
        )
        self._reader = asyncio.create_task(self._read(self._ws))
        await self._send(create_sync_message(self.doc))
        await asyncio.wait_for(self.synced.wait(), timeout)
        return self

    @property
    def connect_ns(self) -> int:
        """From opening the connection to reading the server's SyncStep2 (0 until then)."""
        return self.synced_ns - self.started_ns if self.synced_ns else 0

    @property
    def response_headers(self) -> Mapping[str, str]:
        """Headers of the handshake response (`x-collab-instance`, `x-collab-upstream`)."""
        if self._ws is None or self._ws.response is None:
            return {}
        return dict(self._ws.response.headers)

    async def close(self, timeout: float = 5) -> None:
        """Close the socket and wait for the reader to finish."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), timeout)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    # -- editing ----------------------------------------------------------------------

    async def insert_stamped(self, padding: int = 0) -> Stamp:
        """Append a new stamp to the text and send the update; return the stamp."""
        return (await self.insert_stamped_batch(1, padding))[0]

    async def insert_stamped_batch(self, count: int, padding: int = 0) -> list[Stamp]:
        """Add `count` stamps in one transaction and send them as one update."""
        stamps = []
        with self.doc.transaction():
            for _ in range(count):
                stamp = Stamp(self.writer, self._seq, time.monotonic_ns())
                self._seq += 1
                self.text.insert(0 if self.prepend else len(self.text), stamp.encode(padding))
                stamps.append(stamp)
        self.sent.extend(stamps)
        updates, self._local_updates = self._local_updates, []
        for update in updates:
            await self._send(create_update_message(update))
        return stamps

    def stamps_in_text(self) -> list[Stamp]:
        """The stamps the local copy of the document holds, in document order."""
        return parse_stamps(str(self.text))

    # -- internals --------------------------------------------------------------------

    async def _send(self, frame: bytes) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(frame)
        self.frames_sent += 1
        self.bytes_sent += len(frame)

    def _on_transaction(self, event: TransactionEvent) -> None:
        if self._remote_frame_ns is None:
            self._local_updates.append(event.update)

    def _on_text(self, event: TextEvent) -> None:
        received_ns = self._remote_frame_ns
        if received_ns is None:
            return
        for item in event.delta:  # type: ignore[attr-defined]  # set at run time
            inserted = item.get("insert")
            if isinstance(inserted, str):
                for stamp in parse_stamps(inserted):
                    self.observations.append(Observation(stamp, received_ns))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                now = time.monotonic_ns()
                if isinstance(frame, str):
                    continue
                self.frames_received += 1
                self.bytes_received += len(frame)
                if len(frame) < 2 or frame[0] != MESSAGE_SYNC:
                    continue
                self._remote_frame_ns = now
                try:
                    reply = handle_sync_message(frame[1:], self.doc)
                finally:
                    self._remote_frame_ns = None
                if frame[1] == SYNC_UPDATE:
                    self.update_frames += 1
                elif frame[1] == SYNC_STEP2 and not self.synced.is_set():
                    self.synced_ns = now
                    self.synced.set()
                if reply is not None:
                    await self._send(reply)
        except websockets.ConnectionClosed:
            pass
        except Exception as error:  # a frame pycrdt refused: the run must say so
            self.error = error
        finally:
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason or ""
            self.closed.set()


# --------------------------------------------------------------------------------------
# Pacing and the generator's own health
# --------------------------------------------------------------------------------------


async def run_at_rate(
    action: Callable[[], Awaitable[object]],
    rate: float,
    *,
    start: float,
    until: float,
    lateness: list[float] | None = None,
) -> int:
    """Call `action` `rate` times a second on a fixed schedule from `start` to `until`.

    Times are time.monotonic(). The schedule is open-loop: a slow call does not push
    later slots back, the next ones start at once until the schedule is caught up. How
    late each call started (seconds) is appended to `lateness`. Returns the calls made.
    """
    period = 1.0 / rate
    slot = start
    calls = 0
    while slot < until:
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if lateness is not None:
            lateness.append(time.monotonic() - slot)
        await action()
        calls += 1
        slot += period
    return calls


def random_phase(rate: float, rng: random.Random | None = None) -> float:
    """A start offset within one period, so that many paced senders do not fire together."""
    return (rng or random).uniform(0, 1.0 / rate)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside a measured window.

    A generator accumulates hundreds of thousands of small objects (observations,
    deliveries); a full collection walks them all and stalls the event loop for 100 ms
    or more, which would show as the servers' latency. So: collect first, freeze what
    survives (it lives until the end of the run), collect nothing inside, re-enable after.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class LoopLagMonitor:
    """How late the event loop wakes a sleeper: a busy generator shows here first."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> LoopLagMonitor:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, time.monotonic() - before - self.interval))


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError("q is a percentage")
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """Count, mean and the usual percentiles of a sample (in the sample's unit)."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    def scaled(self, factor: float) -> Summary:
        """The same summary in another unit (e.g. 1e-6 for ns to ms)."""
        return Summary(
            self.count,
            self.mean * factor,
            self.p50 * factor,
            self.p95 * factor,
            self.p99 * factor,
            self.max * factor,
        )


def summarize(values: Iterable[float]) -> Summary:
    """Summary of a sample; NaN everywhere for an empty one."""
    ordered = sorted(values)
    if not ordered:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    return Summary(
        count=len(ordered),
        mean=sum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


# --------------------------------------------------------------------------------------
# CPU time from /proc
# --------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat a CPU measurement needs (times in clock ticks)."""

    pid: int
    comm: str
    ppid: int
    pgrp: int
    utime: int
    stime: int
    cutime: int  # waited-for children, e.g. a gunicorn worker that was replaced
    cstime: int

    @property
    def user_ticks(self) -> int:
        """Own user time plus that of the children this process has reaped."""
        return self.utime + self.cutime

    @property
    def system_ticks(self) -> int:
        """Own system (kernel) time plus that of the children this process has reaped."""
        return self.stime + self.cstime


class CpuTimes(NamedTuple):
    """User and system CPU seconds."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system


def read_proc_stat(pid: int) -> ProcStat | None:
    """/proc/<pid>/stat, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    head, _, rest = raw.rpartition(")")  # comm may itself hold spaces and parentheses
    fields = rest.split()
    return ProcStat(
        pid=pid,
        comm=head.partition("(")[2],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def all_proc_stats() -> list[ProcStat]:
    """Every process visible in /proc."""
    stats = (read_proc_stat(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [stat for stat in stats if stat is not None]


def tree_pids(roots: Iterable[int], stats: Sequence[ProcStat] | None = None) -> set[int]:
    """The given processes and all their live descendants."""
    stats = all_proc_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def tree_rss_bytes(roots: Iterable[int]) -> int:
    """Resident memory (VmRSS) of the given processes and their descendants, summed.

    Pages shared after a fork count once per process: compare differences of this figure
    over time, not its absolute value, when a tree holds forked workers.
    """
    total = 0
    for pid in tree_pids(roots):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


class ProcessTreeCpu:
    """CPU seconds (user + system) of process trees: a root and its live descendants.

    Each process counts its own time and that of the children it has reaped, so a child
    that exits moves its time into its parent's and nothing is lost or counted twice.
    `refresh()` walks /proc to find the processes (a few ms); calling the object reads
    only their stat files, cheap enough to do while a measurement runs.
    """

    def __init__(self, roots: Callable[[], Iterable[int]], *, descendants: bool = True) -> None:
        self._roots = roots
        self.descendants = descendants
        self.pids: set[int] = set()
        self.refresh()

    @classmethod
    def of_pid(cls, pid: int, *, descendants: bool = True) -> ProcessTreeCpu:
        """A process with all its children (gunicorn's master and its workers).

        With `descendants=False` only the process itself (and the children it reaped):
        a load generator must not count the services it started.
        """
        return cls(lambda: [pid], descendants=descendants)

    @classmethod
    def of_command_name(cls, comm: str) -> ProcessTreeCpu:
        """Every tree whose root is named `comm` (e.g. the PostgreSQL cluster)."""

        def roots() -> list[int]:
            stats = all_proc_stats()
            names = {stat.pid: stat.comm for stat in stats}
            return [s.pid for s in stats if s.comm == comm and names.get(s.ppid) != comm]

        return cls(roots)

    def refresh(self) -> None:
        self.pids = tree_pids(self._roots()) if self.descendants else set(self._roots())

    def times(self) -> CpuTimes:
        """User and system seconds of the known processes, now."""
        stats = [stat for stat in map(read_proc_stat, self.pids) if stat is not None]
        return CpuTimes(
            sum(stat.user_ticks for stat in stats) / CLOCK_TICKS,
            sum(stat.system_ticks for stat in stats) / CLOCK_TICKS,
        )

    def __call__(self) -> float:
        """Total CPU seconds of the known processes, now."""
        return self.times().total


def core_jiffies() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies of every CPU line of /proc/stat ("cpu" is the sum)."""
    cores: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        ticks = [int(value) for value in values[:8]]
        total = sum(ticks)
        cores[name] = (total - ticks[3] - ticks[4], total)
    return cores


# A run starts when the whole machine keeps less than this share of one core busy.
QUIET_CORES = 0.15
# Other processes using more than this share of a core during a run make its figures suspect.
OTHER_LIMIT = 0.10


async def wait_until_quiet(
    limit: float = QUIET_CORES, *, interval: float = 1.0, timeout: float = 30.0
) -> float:
    """Wait until the whole machine keeps less than `limit` of one core busy for `interval`.

    Load figures are only as good as the quiet around them: this waits out whatever else
    runs (and the services' own after-work, such as compaction). Returns the last figure
    measured (cores busy), above `limit` when the timeout came first.
    """
    deadline = time.monotonic() + timeout
    while True:
        started, (busy_before, _) = time.monotonic(), core_jiffies()["cpu"]
        await asyncio.sleep(interval)
        busy = (core_jiffies()["cpu"][0] - busy_before) / CLOCK_TICKS
        cores_busy = busy / (time.monotonic() - started)
        if cores_busy < limit or time.monotonic() > deadline:
            return cores_busy


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Named CPU counters and per-core jiffies read at one moment (time.monotonic_ns())."""

    at_ns: int
    processes: dict[str, CpuTimes]
    cores: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """What happened between two snapshots."""

    seconds: float  # wall-clock time between them
    processes: dict[str, float]  # CPU seconds used by each named probe
    system: dict[str, float]  # the part of it spent in the kernel (system time)
    cores: dict[str, float]  # busy fraction of each core ("cpu" is the whole machine)
    busy_seconds: float  # CPU seconds the whole machine was busy (all cores)

    def share(self, name: str) -> float:
        """CPU used by a probe as a fraction of one core."""
        return self.processes[name] / self.seconds

    @property
    def unaccounted(self) -> float:
        """CPU seconds of everything but the probes: other processes, the kernel's own."""
        return self.busy_seconds - sum(self.processes.values())


class CpuMeter:
    """Reads several CPU probes together: `snapshot()` now, `usage(before, after)` later."""

    def __init__(self, probes: Mapping[str, ProcessTreeCpu]) -> None:
        self.probes = dict(probes)

    def refresh(self) -> None:
        """Re-discover the processes of every probe (before a measurement)."""
        for probe in self.probes.values():
            probe.refresh()

    def snapshot(self) -> CpuSnapshot:
        return CpuSnapshot(
            at_ns=time.monotonic_ns(),
            processes={name: probe.times() for name, probe in self.probes.items()},
            cores=core_jiffies(),
        )

    @staticmethod
    def usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
        cores = {}
        for name, (busy, total) in after.cores.items():
            old_busy, old_total = before.cores.get(name, (0, 0))
            cores[name] = (busy - old_busy) / max(1, total - old_total)
        busy, _ = after.cores.get("cpu", (0, 0))
        old_busy, _ = before.cores.get("cpu", (0, 0))
        zero = CpuTimes(0.0, 0.0)
        return CpuUsage(
            seconds=(after.at_ns - before.at_ns) / 1e9,
            processes={
                name: times.total - before.processes.get(name, zero).total
                for name, times in after.processes.items()
            },
            system={
                name: times.system - before.processes.get(name, zero).system
                for name, times in after.processes.items()
            },
            cores=cores,
            busy_seconds=(busy - old_busy) / CLOCK_TICKS,
        )


# --------------------------------------------------------------------------------------
# Prometheus metrics
# --------------------------------------------------------------------------------------


def scrape_metrics(base_url: str, timeout: float = 5) -> dict[str, float]:
    """GET /metrics: every sample as {'name{labels}': value}."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout) as response:
        body = response.read().decode()
    return parse_metrics(body)


def parse_metrics(body: str) -> dict[str, float]:
    """Prometheus text exposition as {'name{labels}': value} (no timestamps expected)."""
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples


def metric_total(samples: Mapping[str, float], name: str) -> float:
    """The sum of every series of one metric, whatever its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable as plain text too)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table; "-" for NaN (nothing measured)."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def fmt_pct(value: float) -> str:
    """A fraction as a percentage for a table; "-" for NaN."""
    return "-" if math.isnan(value) else f"{value:.0%}"


class MeasuredRun(Protocol):
    """What `health_warnings` reads of a run's result."""

    busy_before: float  # cores the machine kept busy just before the run
    schedule_late_p99_ms: float

    def share(self, name: str) -> float:
        """A CPU probe's share of one core ("generator", "other")."""
        ...


def health_warnings(name: str, run: MeasuredRun) -> list[str]:
    """What makes a run's figures suspect: a busy generator or a busy machine."""
    notes = []
    generator, other = run.share("generator"), run.share("other")
    if generator > 0.8:
        notes.append(f"{name}: the generator used {generator:.0%} of a core")
    if run.schedule_late_p99_ms > 5:
        notes.append(f"{name}: inserts left up to {run.schedule_late_p99_ms:.1f} ms late (p99)")
    if run.busy_before > QUIET_CORES:
        notes.append(f"{name}: started on a busy machine ({run.busy_before:.0%} of a core)")
    if other > OTHER_LIMIT:
        notes.append(f"{name}: other processes used {other:.0%} of a core")
    return notes


# --------------------------------------------------------------------------------------
# Convergence
# --------------------------------------------------------------------------------------


def convergence_problems(
    expected: Collection[Stamp], copies: Mapping[str, str], *, limit: int = 5
) -> list[str]:
    """What is wrong with the copies of one document's text (empty when nothing is).

    Every expected stamp must be in every copy exactly once, no copy may hold any other
    stamp, and all copies must be identical (the CRDT's promise).
    """
    problems: list[str] = []
    wanted = set(expected)
    if len(wanted) != len(expected):
        problems.append("the expected stamps hold duplicates")
    for name, text in copies.items():
        counts = Counter(parse_stamps(text))
        missing = wanted - counts.keys()
        extra = counts.keys() - wanted
        doubled = [stamp for stamp, n in counts.items() if n > 1]
        for what, stamps in (("missing", missing), ("unexpected", extra), ("doubled", doubled)):
            if stamps:
                sample = ", ".join(s.encode() for s in sorted(stamps, key=_stamp_key)[:limit])
                problems.append(f"{name}: {len(stamps)} {what} ({sample})")
    texts = list(copies.values())
    if any(text != texts[0] for text in texts[1:]):
        problems.append(f"copies differ: {', '.join(copies)}")
    return problems


def _stamp_key(stamp: Stamp) -> tuple[str, int]:
    return stamp.writer, stamp.seq


# --------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------

# The services' production defaults where the test suite shortens them.
EDITOR_BENCH_ENV = {"COLLAB_HEAL_INTERVAL_SECONDS": "1.0"}
GATEWAY_BENCH_ENV = {"GATEWAY_HEALTH_INTERVAL_SECONDS": "1"}

DatabaseKind = Literal["postgres", "sqlite"]


def can_pin() -> bool:
    """Whether CPU pinning is possible: `taskset` installed and at least two CPUs here."""
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def pin_current_process(cpus: Iterable[int]) -> None:
    """Pin this process (and the threads it starts later) to the given CPUs."""
    os.sched_setaffinity(0, set(cpus))


def cpu_list(cpus: str) -> set[int]:
    """A taskset-style CPU list ("1", "0-1", "0,2") as a set of CPU numbers."""
    found: set[int] = set()
    for part in cpus.split(","):
        low, _, high = part.strip().partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


def pin_process_tree(pid: int, cpus: str) -> None:
    """Pin every thread of a running process and its descendants (one not started by us)."""
    allowed = cpu_list(cpus)
    for member in tree_pids([pid]):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in os.listdir(f"/proc/{member}/task"):
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(int(task), allowed)


def _pinned(command: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else list(command)


def start_editor(
    name: str,
    *,
    database_url: str,
    cpus: str | None = None,
    workers: int = 1,
    redis_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> EditorInstance:
    """An editor instance (gunicorn + uvicorn workers) on a free port, ready to serve.

    `cpus` ("1", "0-1") pins gunicorn and every worker with `taskset`; the heal interval
    is the production default unless `extra_env` says otherwise.
    """
    editor = EditorInstance(
        name,
        database_url=database_url,
        redis_url=redis_url,
        workers=workers,
        extra_env={**EDITOR_BENCH_ENV, **(extra_env or {})},
    )
    editor.command = _pinned(EditorInstance.command, cpus)
    return editor.start()


def start_gateway(
    name: str,
    *,
    upstreams: Sequence[str],
    cpus: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> GatewayInstance:
    """A gateway in front of `upstreams` on a free port, ready (an upstream is healthy)."""
    gateway = GatewayInstance(
        name, upstreams=list(upstreams), extra_env={**GATEWAY_BENCH_ENV, **(extra_env or {})}
    )
    gateway.command = _pinned(GatewayInstance.command, cpus)
    return gateway.start()


@contextlib.contextmanager
def fresh_database(kind: DatabaseKind) -> Iterator[str]:
    """A new, migrated database for one run; yields its URL and removes it afterwards.

    PostgreSQL uses the administrative connection of the test suite (TEST_POSTGRES_URL,
    default postgres:postgres@127.0.0.1:5432).
    """
    if kind == "postgres":
        database = PostgresDatabase().create()
        try:
            yield database.url
        finally:
            database.drop()
    else:
        folder = tempfile.mkdtemp(prefix="collab-load-")
        try:
            url = f"sqlite:///{folder}/collab.sqlite3"
            run_manage(["migrate", "--no-input", "-v0"], {"DATABASE_URL": url})
            yield url
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def postgres_backends(database_url: str) -> list[int]:
    """Process ids of the PostgreSQL backends connected to this database (ours excluded)."""
    query = (
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        return [int(row[0]) for row in conn.execute(query).fetchall()]


def fetch_document_text(base_url: str, doc_id: str, timeout: float = 10) -> str:
    """The stored copy of a document's text, from the editor's HTTP API."""
    with urllib.request.urlopen(f"{base_url}/api/docs/{doc_id}/state", timeout=timeout) as resp:
        state = resp.read()
    doc: Doc[Any] = Doc()
    doc.apply_update(state)
    return str(doc.get("text", type=Text))


def start_py_spy(
    pid: int, output: Path, *, seconds: float, rate: int = 200, native: bool = False
) -> subprocess.Popen[bytes] | None:
    """Sample a Python process with py-spy (if installed) into collapsed stacks.

    By default `--nonblocking`: the target is never paused, and time spent in C code
    (uvloop, system calls) shows as the Python frame that called it. `native` unwinds C
    frames too, but pauses the target for every sample. None without py-spy.
    """
    # The bench extra installs it into the virtualenv, which need not be on PATH.
    binary = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if binary is None:
        return None
    command = [binary, "record", "--pid", str(pid), "--output", str(output), "--format", "raw"]
    command += ["--rate", str(rate), "--duration", str(math.ceil(seconds))]
    command += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def collapsed_profile_summary(path: Path, top: int = 15) -> str:
    """The functions holding most samples of a py-spy collapsed-stack file, as text.

    `self` counts samples where the function was running; `total` samples where it was
    anywhere on the stack. py-spy leaves out samples of idle threads, so shares are of
    the time the process was busy.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {frame}" for frame, n in own.most_common(top)]
    lines.append("total %  function")
    lines += [f"{100 * n / samples:6.1f}  {frame}" for frame, n in total.most_common(top)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Machine:
    """What a result depends on: CPUs, memory, kernel, interpreter, library versions."""

    cpus: int
    cpu_model: str
    memory_gib: float
    kernel: str
    python: str
    packages: dict[str, str] = field(default_factory=dict)

    @classmethod
    def describe(cls) -> Machine:
        model = "unknown"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
        memory_kib = 0
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
        packages = {}
        for package in ("uvicorn", "websockets", "pycrdt", "gunicorn", "uvloop", "httptools"):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                packages[package] = importlib.metadata.version(package)
        return cls(
            cpus=os.cpu_count() or 0,
            cpu_model=model,
            memory_gib=round(memory_kib / 1024**2, 1),
            kernel=platform.release(),
            python=sys.version.split()[0],
            packages=packages,
        )
