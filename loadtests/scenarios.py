"""Our editor against the reference y-websocket server, scenario by scenario, side by side.

Scenarios (each on fresh documents, against each server in the same session):

1. `steady`: many documents x a few clients, every client typing a few inserts a second.
2. `hot`: one document x 100+ clients (fan-out); headline: server CPU per delivery.
3. `idle`: thousands of idle connections over hundreds of documents; RSS per connection.
4. `late`: a document with a 20,000-insert history, then 20 clients joining at once;
   time to full content.
5. `cross-pod`: steady and hot through the gateway in front of two editor instances
   sharing Redis and PostgreSQL, and hot with the clients split over both editors
   (Redis fan-out). The reference side is the single reference server's steady and hot.
6. `saturation`: offered load raised step by step until p99 latency passes 50 ms; the
   highest sustained deliveries per second, and per core of server CPU.

Every run reports connect + sync time, end-to-end latency, deliveries per second, server
CPU per delivery, the generator's own CPU and loop lag, and a convergence verdict (every
insert exactly once in every full client, and in our stored copy); a loss or duplicate
fails the run and the exit status is 1.

    python -m loadtests.scenarios --quick              # every scenario, both servers
    python -m loadtests.scenarios --server ours --scenarios hot,late
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from loadtests import report
from loadtests.harness import (
    CpuMeter,
    CpuUsage,
    DatabaseKind,
    LoadClient,
    Machine,
    ProcessTreeCpu,
    can_pin,
    collapsed_profile_summary,
    convergence_problems,
    cpu_list,
    gc_paused,
    pin_current_process,
    start_py_spy,
    summarize,
    tree_pids,
    wait_until_quiet,
)
from loadtests.servers import (
    OursCrossPod,
    OursSingle,
    Target,
    ours_cross_pod,
    ours_single,
    reference,
    reference_version,
)
from loadtests.thin_client import ThinClient
from loadtests.workload import (
    Fleet,
    Load,
    RunResult,
    UrlFor,
    add_stored_copy,
    connect_all,
    measure,
    server_seconds,
    wait_for,
)

SCENARIOS = ("idle", "steady", "hot", "late", "saturation", "cross-pod")
SERVERS = ("ours", "reference")


# The full mode's loads (frozen, so shared defaults are safe).
STEADY = Load(docs=60, full=3, thin=0, writers=3, rate=2.0)
HOT = Load(docs=1, full=8, thin=142, writers=5, rate=4.0)
SATURATION = Load(docs=10, full=3, thin=17, writers=2, rate=2.5)  # rate: the first step's


@dataclass(frozen=True, slots=True)
class Settings:
    """One invocation: which scenarios on which servers, their sizes, where things run."""

    mode: str = "full"
    servers: tuple[str, ...] = SERVERS
    scenarios: tuple[str, ...] = SCENARIOS
    warmup: float = 5.0  # seconds of load before a window
    duration: float = 30.0  # seconds measured
    steady: Load = STEADY
    hot: Load = HOT
    idle_connections: int = 4000
    idle_docs: int = 400
    history: int = 20000  # inserts in the late joiners' document
    history_batch: int = 1  # inserts per update frame while building it
    # Prepending makes every insert its own Yjs item (nothing merges: a fragmented
    # document, like one edited all over); appending lets Yjs merge the whole run into
    # a few items, but costs the generator O(n) per insert in yrs (~10 s for 20,000).
    history_append: bool = False
    joiners: int = 20
    saturation: Load = SATURATION
    sat_factor: float = 1.5  # offered load multiplied by this at each step
    sat_steps: int = 10
    sat_warmup: float = 2.0
    sat_duration: float = 10.0
    sat_p99_ms: float = 50.0
    database: DatabaseKind = "postgres"
    server_cpus: str | None = "1"  # taskset -c lists; None: unpinned
    generator_cpus: str | None = "0"
    quiet_timeout: float = 30.0  # longest wait for an idle machine before a run
    drain_timeout: float = 30.0
    seed: int = 1
    profile: Path | None = None

    def layout(self) -> str:
        if not (self.server_cpus or self.generator_cpus):
            return "unpinned"
        return (
            f"server(s) on CPU {self.server_cpus or 'any'}, generator on CPU "
            f"{self.generator_cpus or 'any'}, PostgreSQL unpinned"
        )


QUICK = Settings(
    mode="quick",
    warmup=2.0,
    duration=5.0,
    steady=Load(docs=30, full=3, thin=0, writers=3, rate=2.0),
    hot=Load(docs=1, full=6, thin=114, writers=4, rate=5.0),
    idle_connections=1000,
    idle_docs=100,
    joiners=20,
    saturation=SATURATION,
    sat_factor=2.0,
    sat_steps=6,
    sat_warmup=1.0,
    sat_duration=3.0,
    quiet_timeout=3.0,
    drain_timeout=20.0,
)


@dataclass(slots=True)
class Session:
    """One target being measured: its CPU meter and the settings."""

    target: Target
    meter: CpuMeter
    settings: Settings
    rng: random.Random

    def tag(self) -> str:
        return uuid.uuid4().hex[:6]


# --------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------


async def run_load(
    session: Session,
    name: str,
    load: Load,
    *,
    url_for: UrlFor | None = None,
    profile: bool = False,
) -> RunResult:
    """The common shape: connect a fleet, measure one paced window, verify, close."""
    s = session.settings
    busy = await _quiet(session)
    fleet = Fleet(load, session.tag(), url_for or _url_for(session.target))
    try:
        await fleet.connect()
        sampler = _start_profile(session, name, s.warmup + s.duration) if profile else None
        result = await measure(
            session.target,
            session.meter,
            fleet,
            scenario=name,
            warmup=s.warmup,
            duration=s.duration,
            drain_timeout=s.drain_timeout,
            rng=session.rng,
        )
        result.busy_before = busy
        if sampler is not None:
            await asyncio.to_thread(sampler.wait, 60)
        upstreams = Counter(fleet.headers("x-collab-upstream"))
        if any(upstreams):
            result.extra["clients_per_upstream"] = dict(upstreams)
        return result
    finally:
        await fleet.close()


async def steady(session: Session) -> list[RunResult]:
    return [await run_load(session, "steady", session.settings.steady, profile=True)]


async def hot(session: Session) -> list[RunResult]:
    return [await run_load(session, "hot", session.settings.hot, profile=True)]


async def idle(session: Session) -> list[RunResult]:
    """Thousands of synced, silent connections: RSS and CPU they cost the server.

    Each document has one full client and thin ones. RSS of the server's process trees
    is read before connecting and after the connections settled; the server's CPU is
    measured over a window in which nobody writes. Then every full client inserts once,
    which every idle connection must receive (the verdict).
    """
    s = session.settings
    per_doc = max(2, math.ceil(s.idle_connections / s.idle_docs))
    load = Load(docs=s.idle_docs, full=1, thin=per_doc - 1, writers=1, rate=1.0)
    fleet = Fleet(load, session.tag(), _url_for(session.target))
    target, meter = session.target, session.meter
    busy = await _quiet(session)
    try:
        rss_before = target.rss_bytes()
        await fleet.connect()
        await asyncio.sleep(2.0)  # let the server finish the handshakes' after-work
        await wait_until_quiet(timeout=s.quiet_timeout)
        await asyncio.to_thread(meter.refresh)
        before = meter.snapshot()
        await asyncio.sleep(s.duration)
        usage = CpuMeter.usage(before, meter.snapshot())
        rss_after = target.rss_bytes()
        # One insert per document, within one second: every idle socket must get it.
        result = await measure(
            target,
            meter,
            fleet,
            scenario="idle",
            warmup=0.0,
            duration=1.0,
            drain_timeout=s.drain_timeout,
            rng=session.rng,
        )
    finally:
        await fleet.close()
    server = server_seconds(usage.processes, target)
    result.busy_before = busy
    result.extra.update(
        connections=load.connections,
        rss_before=rss_before,
        rss_after=rss_after,
        rss_per_connection=(rss_after - rss_before) / load.connections,
        idle_server_cpu_ms_per_s=1e3 * server / usage.seconds,
        idle_window_s=usage.seconds,
    )
    return [result]


async def late_joiners(session: Session) -> list[RunResult]:
    """A document with a long history, then many clients joining it at once.

    One full client builds the history with real inserts (`history_batch` per update
    frame) while a thin watcher confirms that the server relayed all of them. Then the
    joiners connect together; each keeps what it reads and is timed from opening its
    connection to the frame that completed the document. Afterwards each joiner's frames
    are applied to a fresh pycrdt Doc: every copy must hold every insert exactly once.
    """
    s, target = session.settings, session.target
    tag = session.tag()
    doc_id = f"load-{tag}-history"
    url = target.ws_url(doc_id)
    builder = LoadClient(url, f"{tag}.builder", observe=False, prepend=not s.history_append)
    watcher = ThinClient(url, f"{tag}.watcher")
    joiners = [ThinClient(url, f"{tag}.j{i}", keep=True) for i in range(s.joiners)]
    busy = await _quiet(session)
    try:
        await connect_all([builder, watcher])
        build_s = await _build_history(builder, watcher, s)
        await wait_until_quiet(timeout=s.quiet_timeout)  # e.g. compaction
        await asyncio.to_thread(session.meter.refresh)
        with gc_paused():
            before = session.meter.snapshot()
            await connect_all(joiners, concurrency=len(joiners))
            # Both servers send the whole document in the SyncStep2; should content come
            # later, the (costly) stamp count below waits for it, and replay() times it.
            await wait_for(lambda: all(j.synced_ns for j in joiners), s.drain_timeout)
            await wait_for(
                lambda: all(j.kept_stamps() >= s.history for j in joiners),
                s.drain_timeout,
                interval=0.2,
            )
            usage = CpuMeter.usage(before, session.meter.snapshot())
        for joiner in joiners:
            joiner.replay()
        problems = _late_problems(doc_id, builder, watcher, joiners, s)
        problems += await _stored_problems(target, doc_id, builder)
    finally:
        await asyncio.gather(builder.close(), watcher.close(), *(j.close() for j in joiners))
    result = _late_result(session, usage, builder, watcher, joiners, build_s, problems)
    result.busy_before = busy
    return [result]


async def _build_history(builder: LoadClient, watcher: ThinClient, s: Settings) -> float:
    """Send `history` inserts, `history_batch` per frame; seconds until the watcher has all."""
    started = time.monotonic()
    for _ in range(s.history // s.history_batch):
        await builder.insert_stamped_batch(s.history_batch)
    # Generous: a slow server gets minutes to relay 20,000 updates, then the run fails.
    await wait_for(lambda: len(watcher.seen) >= s.history, 10 * s.drain_timeout)
    return time.monotonic() - started


def _late_problems(
    doc_id: str,
    builder: LoadClient,
    watcher: ThinClient,
    joiners: Sequence[ThinClient],
    s: Settings,
) -> list[str]:
    problems = []
    if len(watcher.seen) < s.history:
        problems.append(f"{doc_id}: the watcher got {len(watcher.seen)} of {s.history} inserts")
    copies = {"builder": str(builder.text)}
    for joiner in joiners:
        if joiner.error is not None or joiner.closed.is_set():
            problems.append(f"{joiner.name}: closed early ({joiner.close_code} {joiner.error})")
        copies[joiner.name] = _rebuild_text(joiner)
    problems += [f"{doc_id}: {p}" for p in convergence_problems(builder.sent, copies)]
    return problems


def _rebuild_text(joiner: ThinClient) -> str:
    """The document a full client would hold after the frames this joiner read."""
    doc: Doc[Any] = Doc()
    for update in joiner.kept_updates():
        doc.apply_update(update)
    return str(doc.get("text", type=Text))


async def _stored_problems(target: Target, doc_id: str, builder: LoadClient) -> list[str]:
    copies: dict[str, str] = {}
    problems = await add_stored_copy(target, doc_id, copies)
    if copies:
        problems += [f"{doc_id}: {p}" for p in convergence_problems(builder.sent, copies)]
    return problems


def _late_result(
    session: Session,
    usage: CpuUsage,
    builder: LoadClient,
    watcher: ThinClient,
    joiners: Sequence[ThinClient],
    build_s: float,
    problems: list[str],
) -> RunResult:
    s, target = session.settings, session.target
    full_ms = []
    for joiner in joiners:
        full_ns = joiner.time_to_count_ns(s.history)
        full_ms.append((full_ns - joiner.started_ns) / 1e6 if full_ns else math.nan)
    server = server_seconds(usage.processes, target)
    watcher_latency = [received - sent for sent, received in watcher.deliveries]
    return RunResult(
        scenario="late",
        server=target.name,
        topology=target.topology,
        load=(
            f"1 doc with {s.history} inserts ({s.history_batch} per update frame, each "
            f"{'appended' if s.history_append else 'prepended'}) from one client, then "
            f"{s.joiners} clients joining at once"
        ),
        window_s=usage.seconds,
        connect_ms=summarize(j.connect_ns / 1e6 for j in joiners),
        # What the watcher saw while the history was sent as fast as possible: a burst.
        latency_ms=summarize(watcher_latency).scaled(1e-6),
        inserts_per_s=s.history / build_s,
        cpu_s={**usage.processes, "server": server, "other": usage.unaccounted},
        system_s=dict(usage.system),
        cores=usage.cores,
        server_probes=target.server_probes(),
        extra={
            "time_to_full_ms": asdict(summarize(full_ms)),
            "history_build_s": build_s,
            "document_bytes": len(builder.doc.get_update()),
            "server_cpu_ms_per_joiner": 1e3 * server / len(joiners),
        },
        problems=problems,
    )


async def saturation(session: Session) -> list[RunResult]:
    """The same fleet at rising offered load until p99 passes the limit (or the generator
    saturates, or a step fails); one result per step."""
    s = session.settings
    fleet = Fleet(s.saturation, session.tag(), _url_for(session.target))
    steps: list[RunResult] = []
    busy = await _quiet(session)
    try:
        await fleet.connect()
        rate = s.saturation.rate
        for step in range(1, s.sat_steps + 1):
            result = await measure(
                session.target,
                session.meter,
                fleet,
                scenario="saturation",
                warmup=s.sat_warmup,
                duration=s.sat_duration,
                drain_timeout=s.drain_timeout,
                rate=rate,
                rng=session.rng,
            )
            stop = _saturation_verdict(result, s)
            result.busy_before = busy
            result.extra.update(step=step, verdict=stop or "sustained")
            steps.append(result)
            print(report.progress(result), file=sys.stderr, flush=True)
            if stop:
                break
            rate *= s.sat_factor
    finally:
        await fleet.close()
    return steps


def _saturation_verdict(result: RunResult, s: Settings) -> str:
    """Why the steps stop here ("" to go on)."""
    if not result.ok:
        return "failed"
    # First: a late or busy generator makes the latencies its own, not the server's.
    generator = report.generator_limit(result)
    if generator:
        return generator
    if result.latency_ms.p99 > s.sat_p99_ms:
        return f"p99 over {s.sat_p99_ms:g} ms"
    if result.delivered_per_s < 0.95 * result.offered_per_s:
        return "fell behind the offered load"
    return report.held_up(result)


async def cross_pod(session: Session) -> list[RunResult]:
    """Steady and hot through the gateway, then hot with the clients split over both
    editors directly (every update crosses Redis to reach half of the clients)."""
    target = session.target
    assert isinstance(target, OursCrossPod)
    s = session.settings
    results = [
        await run_load(session, "cross-pod steady", s.steady),
        await run_load(session, "cross-pod hot", s.hot),
    ]
    split = await run_load(
        session,
        "cross-pod hot, split",
        s.hot,
        url_for=lambda doc, k: target.editor_ws_url(k % 2, doc),
    )
    split.topology = target.topology.replace(
        "via the gateway", "half the clients on each editor, directly"
    )
    return [*results, split]


Scenario = Callable[[Session], Awaitable[list[RunResult]]]
SINGLE_SERVER: dict[str, Scenario] = {
    # Idle first: RSS is read on a server that has not yet grown its heap for others.
    "idle": idle,
    "steady": steady,
    "hot": hot,
    "late": late_joiners,
    "saturation": saturation,
}


def _url_for(target: Target) -> UrlFor:
    return lambda doc, _index: target.ws_url(doc)


# --------------------------------------------------------------------------------------
# Sessions: one per server setup
# --------------------------------------------------------------------------------------


async def open_session(target: Target, settings: Settings) -> Session:
    """A session on a started target: its CPU meter, after a short unmeasured warm-up."""
    generator = ProcessTreeCpu.of_pid(os.getpid(), descendants=False)
    meter = CpuMeter({**target.probes(), "generator": generator})
    session = Session(target, meter, settings, random.Random(settings.seed))
    await _warm_up(session)
    return session


async def _warm_up(session: Session) -> None:
    """Imports, database connections, caches: a few seconds of light load, not recorded."""
    load = Load(docs=2, full=2, thin=2, writers=2, rate=20.0)
    fleet = Fleet(load, session.tag(), _url_for(session.target))
    try:
        await fleet.connect()
        await measure(
            session.target,
            session.meter,
            fleet,
            scenario="warm-up",
            warmup=0.5,
            duration=1.0,
            drain_timeout=10.0,
            check_stored=False,
        )
    finally:
        await fleet.close()


async def _quiet(session: Session) -> float:
    return await wait_until_quiet(timeout=session.settings.quiet_timeout)


async def run_scenarios(
    session: Session, scenarios: dict[str, Scenario], names: Sequence[str]
) -> list[RunResult]:
    """Each named scenario in turn, once the machine is quiet; a crash becomes a FAIL."""
    results: list[RunResult] = []
    for name, scenario in scenarios.items():
        if name not in names:
            continue
        print(f"{session.target.name}: {name}...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            ran = await scenario(session)  # each waits for a quiet machine first
        except Exception as error:
            ran = [_crashed(session.target, name, error)]
        for result in ran:
            result.extra["scenario_s"] = time.monotonic() - started
            if name != "saturation":
                print(report.progress(result), file=sys.stderr, flush=True)
        results += ran
    return results


def _crashed(target: Target, name: str, error: Exception) -> RunResult:
    return RunResult(
        scenario=name,
        server=target.name,
        topology=target.topology,
        load="-",
        problems=[f"the scenario crashed: {error!r}"],
    )


async def measure_all(settings: Settings) -> list[RunResult]:
    """Every selected scenario on every selected server setup, one setup after the other."""
    if settings.generator_cpus:
        pin_current_process(cpu_list(settings.generator_cpus))
    wanted = settings.scenarios
    results: list[RunResult] = []
    single = [name for name in SINGLE_SERVER if name in wanted]
    if "ours" in settings.servers and single:
        most = max(settings.idle_connections, settings.hot.connections) + 100
        with ours_single(
            settings.database, cpus=settings.server_cpus, max_connections=most
        ) as target:
            session = await open_session(target, settings)
            results += await run_scenarios(session, SINGLE_SERVER, single)
    if "ours" in settings.servers and "cross-pod" in wanted:
        limit = 4 * max(settings.steady.connections, settings.hot.connections) + 100
        rate = max(200, math.ceil(10 * max(settings.steady.rate, settings.hot.rate)))
        with ours_cross_pod(
            settings.database, cpus=settings.server_cpus, max_connections=limit, max_rate=rate
        ) as pods:
            session = await open_session(pods, settings)
            results += await run_scenarios(session, {"cross-pod": cross_pod}, ["cross-pod"])
    if "reference" in settings.servers:
        # The reference side of cross-pod is its single server's steady and hot runs.
        names = [*single, *(("steady", "hot") if "cross-pod" in wanted else ())]
        with reference(cpus=settings.server_cpus) as target:
            session = await open_session(target, settings)
            results += await run_scenarios(session, SINGLE_SERVER, names)
    return results


def _start_profile(session: Session, name: str, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy on our editor's worker for one run, when --profile asks and it is installed."""
    folder = session.settings.profile
    target = session.target
    if folder is None or not isinstance(target, OursSingle) or target.editor.process is None:
        return None
    master = target.editor.process.pid
    workers = sorted(tree_pids([master]) - {master})
    if not workers:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    sampler = start_py_spy(workers[0], folder / f"ours-{name}.txt", seconds=seconds)
    if sampler is None:
        print("py-spy is not installed (pip install -e '.[bench]'): no profile", file=sys.stderr)
    return sampler


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _cpus(text: str) -> str | None:
    return None if text.lower() in ("", "none") else text


def _names(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.scenarios",
        description=(
            "Load scenarios against our editor and the reference y-websocket server "
            "(@y/websocket-server), side by side. Without --quick: the full run (~15-20 min)."
        ),
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="short runs of every scenario (~4 min, both)")
    add("--server", choices=("ours", "reference", "both"), default="both")
    add("--scenarios", type=_names(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}")
    add("--duration", type=float, help="measured seconds per run (quick 5, full 30)")
    add("--warmup", type=float, help="seconds of load before each window (quick 2, full 5)")
    add("--docs", type=int, help="steady: documents (quick 30, full 60)")
    add("--clients", type=int, help="steady: clients per document, all writing (3)")
    add("--rate", type=float, help="steady: inserts/s per client (2)")
    add("--hot-clients", type=int, help="hot: clients of the one document (quick 120, full 150)")
    add("--hot-writers", type=int, help="hot: how many of them write (quick 4, full 5)")
    add("--hot-rate", type=float, help="hot: inserts/s per writer (quick 5, full 4)")
    add("--idle-connections", type=int, help="idle: connections (quick 1000, full 4000)")
    add("--idle-docs", type=int, help="idle: documents they spread over (quick 100, full 400)")
    add("--history", type=int, help="late: inserts in the document's history (20000)")
    add("--history-batch", type=int, help="late: inserts per update frame when building (1)")
    add("--history-append", action="store_true", help="late: append, not prepend (see README)")
    add("--joiners", type=int, help="late: clients joining at once (20)")
    add("--sat-start", type=float, help="saturation: inserts/s per writer at step 1 (2.5)")
    add("--sat-factor", type=float, help="saturation: load multiplier per step (quick 2, 1.5)")
    add("--sat-steps", type=int, help="saturation: most steps (quick 6, full 10)")
    add("--sat-p99-ms", type=float, help="saturation: the p99 latency limit (50)")
    add("--database", choices=("postgres", "sqlite"), help="our storage (postgres)")
    add("--server-cpus", help="taskset CPU list for servers, or none (1)")
    add("--generator-cpus", help="taskset CPU list for this process, or none (0)")
    add("--quiet-timeout", type=float, help="longest wait for an idle machine (quick 3, 30)")
    add("--json", metavar="FILE", type=Path, help="also write every figure there")
    add("--profile", metavar="DIR", type=Path, help="py-spy our editor in steady and hot, to DIR")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Settings from the preset (--quick or full) and the options given."""
    args = build_parser().parse_args(argv)
    base = QUICK if args.quick else Settings()
    steady = replace(
        base.steady,
        docs=_pick(args.docs, base.steady.docs),
        full=_pick(args.clients, base.steady.full),
        writers=_pick(args.clients, base.steady.writers),
        rate=_pick(args.rate, base.steady.rate),
    )
    hot_clients = _pick(args.hot_clients, base.hot.clients_per_doc)
    hot_writers = _pick(args.hot_writers, base.hot.writers)
    hot_full = min(hot_clients, max(base.hot.full, hot_writers + 2))
    hot = replace(
        base.hot,
        full=hot_full,
        thin=hot_clients - hot_full,
        writers=hot_writers,
        rate=_pick(args.hot_rate, base.hot.rate),
    )
    cpus = (
        _cpus(args.server_cpus) if args.server_cpus is not None else base.server_cpus,
        _cpus(args.generator_cpus) if args.generator_cpus is not None else base.generator_cpus,
    )
    if any(cpus) and not can_pin():
        print("taskset or a second CPU is missing: running unpinned", file=sys.stderr)
        cpus = (None, None)
    settings = replace(
        base,
        servers=SERVERS if args.server == "both" else (args.server,),
        scenarios=args.scenarios or SCENARIOS,
        warmup=_pick(args.warmup, base.warmup),
        duration=_pick(args.duration, base.duration),
        steady=steady,
        hot=hot,
        idle_connections=_pick(args.idle_connections, base.idle_connections),
        idle_docs=_pick(args.idle_docs, base.idle_docs),
        history=_pick(args.history, base.history),
        history_batch=_pick(args.history_batch, base.history_batch),
        history_append=args.history_append or base.history_append,
        joiners=_pick(args.joiners, base.joiners),
        saturation=replace(base.saturation, rate=_pick(args.sat_start, base.saturation.rate)),
        sat_factor=_pick(args.sat_factor, base.sat_factor),
        sat_steps=_pick(args.sat_steps, base.sat_steps),
        sat_p99_ms=_pick(args.sat_p99_ms, base.sat_p99_ms),
        database=_pick(args.database, base.database),
        server_cpus=cpus[0],
        generator_cpus=cpus[1],
        quiet_timeout=_pick(args.quiet_timeout, base.quiet_timeout),
        profile=args.profile,
    )
    if settings.history % settings.history_batch:
        raise SystemExit("--history must be a multiple of --history-batch")
    return settings, args


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def environment() -> dict[str, Any]:
    """The machine and the versions a reading depends on."""
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return {
        **asdict(Machine.describe()),
        "node": node.stdout.strip(),
        "reference": f"@y/websocket-server {reference_version()}",
    }


def _json_safe(value: Any) -> Any:
    """NaN (nothing measured) as null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_args(argv)
    runner: Callable[[Any], Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop  # the services' event loop; the generator gets the same

        runner = uvloop.run
    started = time.monotonic()
    results: list[RunResult] = runner(measure_all(settings))
    env = environment()
    print("\n" + report.render(results, settings, env, time.monotonic() - started))
    if settings.profile is not None:
        for path in sorted(settings.profile.glob("ours-*.txt")):
            print(f"\nprofile of our editor worker, {path.stem} ({path}):")
            print(collapsed_profile_summary(path))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("w") as out:
            data = {
                "settings": asdict(settings),
                "environment": env,
                "results": [r.to_json() for r in results],
                "summary": report.summary_rows(results),
            }
            json.dump(_json_safe(data), out, indent=2, default=str)
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
