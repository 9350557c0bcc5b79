"""Running a load against a server under test and measuring it: what the scenarios share.

- `Load`: documents x clients per document (full pycrdt clients and thin frame-scanning
  ones), how many of the full clients write, and how fast.
- `Fleet`: the clients of one load on one target: connect, drain, verify.
- `measure()`: paces the writers open-loop, measures one window (latency, deliveries,
  CPU of every party, RSS, the generator's health), waits for every insert to arrive
  and checks convergence; the outcome is a `RunResult`.

A *delivery* is one insert's update frame read by one client other than its writer. The
reference server also echoes every update to its sender; echoes are update frames but
not deliveries (they show in `update_frames_per_s`).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests.harness import (
    CpuMeter,
    CpuSnapshot,
    LoadClient,
    LoopLagMonitor,
    Stamp,
    Summary,
    convergence_problems,
    gc_paused,
    random_phase,
    run_at_rate,
    summarize,
)
from loadtests.servers import Target
from loadtests.thin_client import ThinClient

NAN_SUMMARY = summarize([])
# Connections opened at once: enough to be quick, few enough not to overflow a listen
# backlog (which would turn into seconds of SYN retries and a false connect time).
CONNECT_CONCURRENCY = 64
CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Load:
    """What one run offers: documents x clients per document, and who writes how fast."""

    docs: int
    full: int  # pycrdt clients per document, the writers among them (state checked)
    thin: int  # frame-scanning clients per document (deliveries counted, no state)
    writers: int  # full clients per document that write
    rate: float  # inserts per second per writer

    def __post_init__(self) -> None:
        if self.docs < 1 or self.full < 1 or not 0 <= self.writers <= self.full:
            raise ValueError(f"a load needs docs, a full client and writers <= full: {self}")

    @property
    def clients_per_doc(self) -> int:
        return self.full + self.thin

    @property
    def connections(self) -> int:
        return self.docs * self.clients_per_doc

    @property
    def inserts_per_s(self) -> float:
        return self.docs * self.writers * self.rate

    @property
    def deliveries_per_s(self) -> float:
        """Offered deliveries: every insert to every other client of its document."""
        return self.inserts_per_s * (self.clients_per_doc - 1)

    def describe(self) -> str:
        return (
            f"{self.docs} doc(s) x {self.clients_per_doc} clients ({self.full} full, "
            f"{self.thin} thin), {self.writers} writer(s) x {self.rate:g}/s per doc"
        )


UrlFor = Callable[[str, int], str]  # (document id, client index in it) -> WebSocket URL


class Fleet:
    """Every client of one load on one target, grouped by document."""

    def __init__(self, load: Load, tag: str, url_for: UrlFor) -> None:
        self.load = load
        self.tag = tag
        self.doc_ids = [f"load-{tag}-{d}" for d in range(load.docs)]
        self.full: list[list[LoadClient]] = [
            [LoadClient(url_for(doc, k), f"{tag}.{d}.{k}", prepend=True) for k in range(load.full)]
            for d, doc in enumerate(self.doc_ids)
        ]
        self.thin: list[list[ThinClient]] = [
            [ThinClient(url_for(doc, load.full + k), f"{tag}.{d}.t{k}") for k in range(load.thin)]
            for d, doc in enumerate(self.doc_ids)
        ]

    # -- the clients --------------------------------------------------------------------

    def writers(self) -> list[LoadClient]:
        return [client for doc in self.full for client in doc[: self.load.writers]]

    def all_full(self) -> list[LoadClient]:
        return [client for doc in self.full for client in doc]

    def all_thin(self) -> list[ThinClient]:
        return [client for doc in self.thin for client in doc]

    def everyone(self) -> list[LoadClient | ThinClient]:
        """Every client, full ones first."""
        return [*self.all_full(), *self.all_thin()]

    async def connect(self, concurrency: int = CONNECT_CONCURRENCY) -> None:
        """Connect every client, at most `concurrency` handshakes at a time."""
        await connect_all(self.everyone(), concurrency)

    def connect_ms(self) -> list[float]:
        """Connect + sync time of every client (ms)."""
        return [c.connect_ns / 1e6 for c in self.everyone()]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.everyone()))

    def headers(self, name: str) -> list[str]:
        """One handshake response header of every client (e.g. x-collab-upstream)."""
        full = [c.response_headers.get(name, "") for c in self.all_full()]
        return full + [c.headers.get(name, "") for c in self.all_thin()]

    # -- what arrived -------------------------------------------------------------------

    def expected(self, d: int) -> list[Stamp]:
        """Every insert sent to document `d`."""
        return [stamp for client in self.full[d][: self.load.writers] for stamp in client.sent]

    def update_frames(self) -> int:
        return sum(c.update_frames for c in self.everyone())

    def window_figures(self, lo: int, hi: int) -> tuple[int, list[int], int]:
        """Inserts sent in [lo, hi), latencies (ns) of their deliveries, deliveries read then."""
        sent = sum(1 for c in self.writers() for s in c.sent if lo <= s.sent_ns < hi)
        latencies: list[int] = []
        delivered = 0
        for client in self.all_full():
            for o in client.observations:
                if lo <= o.stamp.sent_ns < hi:
                    latencies.append(o.received_ns - o.stamp.sent_ns)
                delivered += lo <= o.received_ns < hi
        for thin in self.all_thin():
            for sent_ns, received_ns in thin.deliveries:
                if lo <= sent_ns < hi:
                    latencies.append(received_ns - sent_ns)
                delivered += lo <= received_ns < hi
        return sent, latencies, delivered

    def all_arrived(self) -> bool:
        """Whether every client has seen every insert of the others in its document."""
        for d in range(self.load.docs):
            writers = self.full[d][: self.load.writers]
            total = sum(len(w.sent) for w in writers)
            for client in self.full[d]:
                own = len(client.sent)
                if len(client.observations) < total - own:
                    return False
            if any(len(thin.seen) < total for thin in self.thin[d]):
                return False
        return True

    def anyone_closed(self) -> bool:
        return any(client.closed.is_set() for client in self.everyone())

    async def drain(self, timeout: float) -> bool:
        """Wait until every insert has arrived everywhere (or a client closed, or timeout)."""
        await wait_for(lambda: self.all_arrived() or self.anyone_closed(), timeout, interval=0.05)
        return self.all_arrived()

    # -- the verdict --------------------------------------------------------------------

    async def verify(self, target: Target | None) -> list[str]:
        """Every insert exactly once in every full client (and the stored copy, if `target`
        stores one), identical copies, no insert missing at a thin client, nobody closed."""
        problems: list[str] = []
        for d, doc_id in enumerate(self.doc_ids):
            # The clients' documents are read here, on the loop that updates them.
            copies = {client.writer: str(client.text) for client in self.full[d]}
            if target is not None:
                problems += await add_stored_copy(target, doc_id, copies)
            expected = self.expected(d)
            problems += [f"{doc_id}: {p}" for p in convergence_problems(expected, copies)]
            wanted = {(s.writer, s.seq) for s in expected}
            for thin in self.thin[d]:
                lost = len(wanted - thin.seen)
                if lost:
                    problems.append(f"{doc_id}: {thin.name} never got {lost} of {len(wanted)}")
        return problems + self.connection_problems()

    def connection_problems(self) -> list[str]:
        problems = []
        for client in self.all_full():
            if client.closed.is_set():
                problems.append(f"{client.writer}: closed early ({client.close_code})")
            if client.error is not None:
                problems.append(f"{client.writer}: {client.error!r}")
        for thin in self.all_thin():
            if thin.closed.is_set() or thin.error is not None:
                problems.append(f"{thin.name}: closed early ({thin.close_code} {thin.error})")
        return problems

    @property
    def redelivered(self) -> int:
        """Stamps a thin client read more than once (wasted work, not a CRDT duplicate)."""
        return sum(thin.redelivered for thin in self.all_thin())


async def connect_all(
    clients: Sequence[LoadClient | ThinClient], concurrency: int = CONNECT_CONCURRENCY
) -> None:
    """Connect clients, at most `concurrency` at a time; the first failure is raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: LoadClient | ThinClient) -> None:
        async with gate:
            await client.connect(timeout=CONNECT_TIMEOUT)

    await asyncio.gather(*(one(client) for client in clients))


async def wait_for(
    condition: Callable[[], bool], timeout: float, *, interval: float = 0.005
) -> bool:
    """Poll `condition` every `interval` seconds until it holds (True) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def add_stored_copy(target: Target, doc_id: str, copies: dict[str, str]) -> list[str]:
    """Add the target's stored copy of a document to `copies` (if it stores one); problems."""
    try:
        stored = await asyncio.to_thread(target.stored_text, doc_id)
    except OSError as error:
        return [f"{doc_id}: cannot read the stored copy: {error}"]
    if stored is not None:
        copies["stored"] = stored
    return []


# --------------------------------------------------------------------------------------
# One measured run
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    """One scenario run on one server. CPU and delivery figures cover the window only."""

    scenario: str
    server: str
    topology: str
    load: str
    offered_per_s: float = math.nan  # deliveries per second the load offers
    window_s: float = math.nan
    connect_ms: Summary = NAN_SUMMARY
    latency_ms: Summary = NAN_SUMMARY
    inserts_per_s: float = math.nan
    delivered_per_s: float = math.nan
    update_frames_per_s: float = math.nan  # every update frame read, echoes included
    cpu_s: dict[str, float] = field(default_factory=dict)  # probes, "server", "other"
    system_s: dict[str, float] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)
    server_probes: tuple[str, ...] = ()
    generator_lag_p99_ms: float = math.nan
    schedule_late_p99_ms: float = math.nan
    busy_before: float = math.nan  # cores the machine kept busy just before the run
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific figures
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def delivered(self) -> float:
        return self.delivered_per_s * self.window_s

    def share(self, name: str) -> float:
        """CPU of a probe ("server", "generator", "postgres", "other"...) in cores."""
        return self.cpu_s.get(name, math.nan) / self.window_s

    def us_per_delivery(self, name: str = "server") -> float:
        """CPU microseconds of a probe per delivered update."""
        if not self.delivered:
            return math.nan
        return self.cpu_s.get(name, math.nan) * 1e6 / self.delivered

    def server_db_us_per_delivery(self) -> float:
        """The server's and its database's CPU per delivered update."""
        if not self.delivered:
            return math.nan
        db = self.cpu_s.get("postgres", 0.0)
        return (self.cpu_s.get("server", math.nan) + db) * 1e6 / self.delivered

    def deliveries_per_core(self) -> float:
        """Deliveries per second per core of server CPU."""
        server = self.share("server")
        return self.delivered_per_s / server if server else math.nan

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["derived"] = {
            "server_us_per_delivery": self.us_per_delivery("server"),
            "server_db_us_per_delivery": self.server_db_us_per_delivery(),
            "deliveries_per_server_core": self.deliveries_per_core(),
            "shares": {name: self.share(name) for name in self.cpu_s},
        }
        return data


@dataclass(slots=True)
class _Window:
    before: CpuSnapshot | None = None
    after: CpuSnapshot | None = None
    rss_before: int = 0
    rss_after: int = 0
    frames_before: int = 0
    frames_after: int = 0


async def measure(
    target: Target,
    meter: CpuMeter,
    fleet: Fleet,
    *,
    scenario: str,
    warmup: float,
    duration: float,
    drain_timeout: float,
    rate: float | None = None,
    rng: random.Random | None = None,
    check_stored: bool = True,
) -> RunResult:
    """Pace every writer of a connected fleet, measure one window, drain and verify.

    Writers insert at `rate` (default: the load's) from now for `warmup + duration`
    seconds, each at a random phase; the window is the last `duration` seconds.
    """
    rate = fleet.load.rate if rate is None else rate
    lag = LoopLagMonitor()
    lateness: list[float] = []
    window = _Window()
    with gc_paused():
        lag.start()
        start = time.monotonic() + 0.2
        window_start = start + warmup
        end = window_start + duration
        senders = [
            asyncio.create_task(
                run_at_rate(
                    writer.insert_stamped,
                    rate,
                    start=start + random_phase(rate, rng),
                    until=end,
                    lateness=lateness,
                )
            )
            for writer in fleet.writers()
        ]
        sampler = asyncio.create_task(_sample(target, meter, fleet, window, window_start, end))
        try:
            await asyncio.gather(*senders)
            await sampler
            # Still without collections: late deliveries count in the window's latency.
            drained = await fleet.drain(drain_timeout)
        finally:
            await lag.stop()
            for task in (*senders, sampler):
                task.cancel()
    problems = [] if drained else [f"not every insert arrived within {drain_timeout:g} s"]
    problems += await fleet.verify(target if check_stored else None)
    result = window_result(target, fleet, window, scenario, rate, problems)
    result.generator_lag_p99_ms = summarize(lag.samples).p99 * 1e3
    result.schedule_late_p99_ms = summarize(lateness).p99 * 1e3
    return result


async def _sample(
    target: Target, meter: CpuMeter, fleet: Fleet, window: _Window, start: float, end: float
) -> None:
    # Find the processes again (database connections open lazily), off the loop.
    await asyncio.sleep(max(0.0, start - 0.5 - time.monotonic()))
    await asyncio.to_thread(meter.refresh)
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    window.frames_before = fleet.update_frames()
    window.before = meter.snapshot()
    window.rss_before = await asyncio.to_thread(target.rss_bytes)
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    window.after = meter.snapshot()
    window.rss_after = await asyncio.to_thread(target.rss_bytes)
    window.frames_after = fleet.update_frames()


def window_result(
    target: Target, fleet: Fleet, window: _Window, scenario: str, rate: float, problems: list[str]
) -> RunResult:
    """The figures of one window, from the CPU snapshots and what the clients recorded."""
    assert window.before is not None and window.after is not None
    usage = CpuMeter.usage(window.before, window.after)
    sent, latencies, delivered = fleet.window_figures(window.before.at_ns, window.after.at_ns)
    server = server_seconds(usage.processes, target)
    system = server_seconds(usage.system, target)
    load = fleet.load
    paced = Load(load.docs, load.full, load.thin, load.writers, rate)
    return RunResult(
        scenario=scenario,
        server=target.name,
        topology=target.topology,
        load=paced.describe(),
        offered_per_s=paced.deliveries_per_s,
        window_s=usage.seconds,
        connect_ms=summarize(fleet.connect_ms()),
        latency_ms=summarize(latencies).scaled(1e-6),
        inserts_per_s=sent / usage.seconds,
        delivered_per_s=delivered / usage.seconds,
        update_frames_per_s=(window.frames_after - window.frames_before) / usage.seconds,
        cpu_s={**usage.processes, "server": server, "other": usage.unaccounted},
        system_s={**usage.system, "server": system},
        cores=usage.cores,
        server_probes=target.server_probes(),
        extra={
            "rss_before": window.rss_before,
            "rss_after": window.rss_after,
            "redelivered": fleet.redelivered,
        },
        problems=problems,
    )


def server_seconds(cpu_s: dict[str, float], target: Target) -> float:
    """The CPU seconds of the probes that make up "the server", summed."""
    return sum(cpu_s.get(name, 0.0) for name in target.server_probes())
