"""What the gateway costs: latency and CPU, through the gateway versus straight to the editor.

One editor instance (one worker) and one gateway in front of it. For each load level and
each path (`direct`: clients connect to the editor; `gateway`: through the gateway), N
documents get two clients each; the writer of each document inserts stamped text at a
steady rate and the other client observes it. After a warm-up, for a fixed window:

- end-to-end latency from an insert to the other client's observation (p50..max),
- delivered updates per second,
- editor CPU per delivered update, gateway CPU per relayed frame (both directions,
  from its `collab_gateway_frames_total`), PostgreSQL CPU per update,
- the generator's own CPU, its event-loop lag and how late inserts left their slot,
  the busy time of each core, and CPU used by anything else on the machine.

At the end every copy of every document (both clients and the editor's stored copy) must
hold each insert exactly once; otherwise the run says FAIL and the exit status is 1.

    python -m loadtests.gateway_cost [--duration S] [--docs N] [--rate R[,R...]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from loadtests.harness import (
    OTHER_LIMIT,
    CpuMeter,
    CpuSnapshot,
    DatabaseKind,
    LoadClient,
    LoopLagMonitor,
    Machine,
    ProcessTreeCpu,
    Stamp,
    Summary,
    can_pin,
    collapsed_profile_summary,
    convergence_problems,
    cpu_list,
    fetch_document_text,
    fmt,
    fmt_pct,
    fresh_database,
    health_warnings,
    markdown_table,
    metric_total,
    pin_current_process,
    postgres_backends,
    random_phase,
    run_at_rate,
    scrape_metrics,
    start_editor,
    start_gateway,
    start_py_spy,
    summarize,
    wait_until_quiet,
)

Route = Literal["direct", "gateway"]
ROUTES: tuple[Route, ...] = ("direct", "gateway")
FRAMES_METRIC = "collab_gateway_frames_total"
# A run starts when the machine is quiet (harness.QUIET_CORES) or after this many seconds
# of waiting, and then says so.
QUIET_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Settings:
    """One invocation: the load levels, how long each run lasts, where things run."""

    docs: int = 20
    rates: tuple[float, ...] = (20.0, 50.0)  # inserts per second per document
    writers: int = 1  # clients per document that write (of two); they share the rate
    duration: float = 20.0  # seconds measured
    warmup: float = 5.0  # seconds of load before the measurement starts
    database: DatabaseKind = "postgres"
    editor_cpus: str | None = "1"  # taskset -c lists; None: unpinned
    gateway_cpus: str | None = "1"
    generator_cpus: str | None = "0"
    drain_timeout: float = 15.0
    seed: int = 1
    busy_retries: int = 1  # repeats of a run during which other work used the machine

    @property
    def pinned(self) -> bool:
        return any((self.editor_cpus, self.gateway_cpus, self.generator_cpus))

    def layout(self) -> str:
        if not self.pinned:
            return "unpinned"
        return (
            f"editor on CPU {self.editor_cpus or 'any'}, gateway on CPU "
            f"{self.gateway_cpus or 'any'}, generator on CPU {self.generator_cpus or 'any'}"
        )


@dataclass(slots=True)
class RunResult:
    """One route at one load level; CPU figures cover the measured window only."""

    route: str
    rate: float  # inserts/s per document
    docs: int
    window_s: float
    inserts_per_s: float  # sent during the window
    delivered_per_s: float  # observed during the window
    latency_ms: Summary  # of the inserts sent during the window
    cpu_s: dict[str, float]  # CPU seconds: editor, gateway, generator, postgres, other
    system_s: dict[str, float]  # the kernel's part of each (system time)
    gateway_frames: float  # relayed during the window, both directions (its metric)
    client_frames: int  # frames the clients sent and received during the window
    generator_lag_p99_ms: float
    schedule_late_p99_ms: float
    cores: dict[str, float]  # busy fraction per core
    problems: list[str] = field(default_factory=list)
    busy_before: float = 0.0  # cores the machine kept busy just before the run
    attempts: int = 1  # runs made; the earlier ones shared the machine with other work

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def delivered(self) -> float:
        return self.delivered_per_s * self.window_s

    def share(self, name: str) -> float:
        """A probe's CPU as a fraction of one core."""
        return self.cpu_s.get(name, math.nan) / self.window_s

    def system_part(self, name: str) -> float:
        """The fraction of a probe's CPU spent in the kernel."""
        total = self.cpu_s.get(name, math.nan)
        return self.system_s.get(name, math.nan) / total if total else math.nan

    def us_per_update(self, name: str) -> float:
        """A probe's CPU microseconds per delivered update."""
        return self.cpu_s.get(name, math.nan) * 1e6 / self.delivered if self.delivered else math.nan

    @property
    def gateway_us_per_frame(self) -> float:
        if self.route != "gateway" or not self.gateway_frames:
            return math.nan
        return self.cpu_s["gateway"] * 1e6 / self.gateway_frames

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["derived"] = {
            "editor_us_per_update": self.us_per_update("editor"),
            "gateway_us_per_update": self.us_per_update("gateway"),
            "gateway_us_per_frame": self.gateway_us_per_frame,
            "postgres_us_per_update": self.us_per_update("postgres"),
            "shares": {name: self.share(name) for name in self.cpu_s},
        }
        return data


@dataclass(slots=True)
class _Window:
    before: CpuSnapshot | None = None
    after: CpuSnapshot | None = None
    frames_before: float = 0.0
    frames_after: float = 0.0
    client_frames_before: int = 0
    client_frames_after: int = 0


class Bench:
    """The services of the scenario, started once and measured run after run."""

    def __init__(
        self, settings: Settings, editor_url: str, gateway_url: str, meter: CpuMeter
    ) -> None:
        self.settings = settings
        self.editor_url = editor_url
        self.gateway_url = gateway_url
        self.meter = meter
        self.rng = random.Random(settings.seed)

    def ws_base(self, route: Route) -> str:
        base = self.editor_url if route == "direct" else self.gateway_url
        return "ws" + base[4:] + "/ws/docs"

    async def run(
        self,
        route: Route,
        rate: float,
        *,
        warmup: float | None = None,
        duration: float | None = None,
    ) -> RunResult:
        """One measured run on fresh documents; the clients are closed afterwards.

        It starts once the machine is quiet (the previous run's after-work included).
        """
        s = self.settings
        busy_before = await wait_until_quiet(timeout=QUIET_TIMEOUT)
        warmup = s.warmup if warmup is None else warmup
        duration = s.duration if duration is None else duration
        tag = uuid.uuid4().hex[:6]
        doc_ids = [f"bench-{tag}-{i}" for i in range(s.docs)]
        clients = [
            [LoadClient(f"{self.ws_base(route)}/{doc}", f"{tag}.{i}.{k}") for k in range(2)]
            for i, doc in enumerate(doc_ids)
        ]
        everyone = [client for pair in clients for client in pair]
        await asyncio.gather(*(client.connect() for client in everyone))
        for client in everyone:
            if route == "gateway" and not client.response_headers.get("x-collab-upstream"):
                raise RuntimeError("a socket through the gateway without x-collab-upstream")

        lag = LoopLagMonitor().start()
        lateness: list[float] = []
        writer_rate = rate / s.writers
        start = time.monotonic() + 0.2
        window_start = start + warmup
        end = window_start + duration
        senders = [
            asyncio.create_task(
                run_at_rate(
                    client.insert_stamped,
                    writer_rate,
                    start=start + random_phase(writer_rate, self.rng),
                    until=end,
                    lateness=lateness,
                )
            )
            for pair in clients
            for client in pair[: s.writers]
        ]
        window = _Window()
        sampler = asyncio.create_task(self._sample(route, window, everyone, window_start, end))
        try:
            await asyncio.gather(*senders)
            await sampler
            await self._drain(clients, s.drain_timeout)
        finally:
            await lag.stop()
            for task in (*senders, sampler):
                task.cancel()
        problems = await self._verify(doc_ids, clients)
        await asyncio.gather(*(client.close() for client in everyone))
        problems += [f"{c.writer}: {c.error!r}" for c in everyone if c.error is not None]
        result = self._result(route, rate, window, everyone, lag.samples, lateness, problems)
        result.busy_before = busy_before
        return result

    async def _sample(
        self,
        route: Route,
        window: _Window,
        clients: Sequence[LoadClient],
        window_start: float,
        end: float,
    ) -> None:
        # Find the processes again (database connections open lazily), off the loop.
        await asyncio.sleep(max(0.0, window_start - 1.0 - time.monotonic()))
        await asyncio.to_thread(self.meter.refresh)
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        window.frames_before = await self._gateway_frames(route)
        window.client_frames_before = _frames(clients)
        window.before = self.meter.snapshot()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        window.after = self.meter.snapshot()
        window.client_frames_after = _frames(clients)
        window.frames_after = await self._gateway_frames(route)

    async def _gateway_frames(self, route: Route) -> float:
        if route != "gateway":
            return 0.0
        samples = await asyncio.to_thread(scrape_metrics, self.gateway_url)
        return metric_total(samples, FRAMES_METRIC)

    @staticmethod
    async def _drain(clients: Sequence[Sequence[LoadClient]], timeout: float) -> None:
        """Wait until each client has observed every insert of the other one (or a close)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                len(a.observations) >= len(b.sent) and len(b.observations) >= len(a.sent)
                for a, b in clients
            ):
                return
            if any(client.closed.is_set() for pair in clients for client in pair):
                return
            await asyncio.sleep(0.05)

    async def _verify(
        self, doc_ids: Sequence[str], clients: Sequence[Sequence[LoadClient]]
    ) -> list[str]:
        """Every insert exactly once in both clients and in the stored copy; nothing closed."""
        problems: list[str] = []
        for doc_id, pair in zip(doc_ids, clients, strict=True):
            for client in pair:
                if client.closed.is_set():
                    problems.append(
                        f"{doc_id}: {client.writer} closed early "
                        f"({client.close_code} {client.close_reason})"
                    )
            expected: list[Stamp] = [stamp for client in pair for stamp in client.sent]
            # The clients' documents are read here, on the loop that updates them.
            copies = {client.writer: str(client.text) for client in pair}
            try:
                copies["stored"] = await asyncio.to_thread(
                    fetch_document_text, self.editor_url, doc_id
                )
            except OSError as error:
                problems.append(f"{doc_id}: cannot read the stored copy: {error}")
            problems.extend(f"{doc_id}: {p}" for p in convergence_problems(expected, copies))
            for a, b in (pair, pair[::-1]):
                if len(a.observations) != len(b.sent):
                    problems.append(
                        f"{doc_id}: {a.writer} observed {len(a.observations)} of {len(b.sent)}"
                    )
        return problems

    def _result(
        self,
        route: Route,
        rate: float,
        window: _Window,
        clients: Sequence[LoadClient],
        lag: Sequence[float],
        lateness: Sequence[float],
        problems: list[str],
    ) -> RunResult:
        assert window.before is not None and window.after is not None
        usage = CpuMeter.usage(window.before, window.after)
        lo, hi = window.before.at_ns, window.after.at_ns
        sent = sum(1 for c in clients for s in c.sent if lo <= s.sent_ns < hi)
        observed = [o for c in clients for o in c.observations]
        latencies = [o.latency_ns for o in observed if lo <= o.stamp.sent_ns < hi]
        delivered = sum(1 for o in observed if lo <= o.received_ns < hi)
        return RunResult(
            route=route,
            rate=rate,
            docs=self.settings.docs,
            window_s=usage.seconds,
            inserts_per_s=sent / usage.seconds,
            delivered_per_s=delivered / usage.seconds,
            latency_ms=summarize(latencies).scaled(1e-6),
            cpu_s={**usage.processes, "other": usage.unaccounted},
            system_s=usage.system,
            gateway_frames=window.frames_after - window.frames_before,
            client_frames=window.client_frames_after - window.client_frames_before,
            generator_lag_p99_ms=summarize(lag).p99 * 1e3,
            schedule_late_p99_ms=summarize(lateness).p99 * 1e3,
            cores=usage.cores,
            problems=problems,
        )


def _frames(clients: Sequence[LoadClient]) -> int:
    return sum(c.frames_sent + c.frames_received for c in clients)


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def latency_table(results: Sequence[RunResult]) -> str:
    """Throughput and end-to-end latency, one row per run."""
    header = ["rate/doc", "route", "inserts/s", "delivered/s"]
    header += ["p50 ms", "p95 ms", "p99 ms", "max ms", "converged"]
    rows = [
        [
            fmt(r.rate, 0),
            r.route,
            fmt(r.inserts_per_s, 0),
            fmt(r.delivered_per_s, 0),
            fmt(r.latency_ms.p50, 2),
            fmt(r.latency_ms.p95, 2),
            fmt(r.latency_ms.p99, 2),
            fmt(r.latency_ms.max, 1),
            "ok" if r.ok else "FAIL",
        ]
        for r in results
    ]
    return markdown_table(header, rows)


def cpu_table(results: Sequence[RunResult]) -> str:
    """CPU of every party, one row per run (shares are of one core)."""
    header = ["rate/doc", "route", "editor", "editor µs/upd", "editor sys", "gateway"]
    header += ["gw frames/s", "gw µs/frame", "gw sys", "pg µs/upd", "generator"]
    header += ["gen lag p99 ms", "late p99 ms", "other", "cpu0 / cpu1 busy"]
    rows = []
    for r in results:
        through = r.route == "gateway"
        rows.append(
            [
                fmt(r.rate, 0),
                r.route,
                fmt_pct(r.share("editor")),
                fmt(r.us_per_update("editor"), 0),
                fmt_pct(r.system_part("editor")),
                fmt_pct(r.share("gateway")),
                fmt(r.gateway_frames / r.window_s, 0) if through else "-",
                fmt(r.gateway_us_per_frame, 1) if through else "-",
                fmt_pct(r.system_part("gateway")) if through else "-",
                fmt(r.us_per_update("postgres"), 0),
                fmt_pct(r.share("generator")),
                fmt(r.generator_lag_p99_ms, 2),
                fmt(r.schedule_late_p99_ms, 2),
                fmt_pct(r.share("other")),
                " / ".join(fmt_pct(r.cores.get(core, math.nan)) for core in ("cpu0", "cpu1")),
            ]
        )
    return markdown_table(header, rows)


def comparison_table(results: Sequence[RunResult]) -> str:
    """Gateway minus direct, and gateway / direct, at each load level."""
    header = ["rate/doc", "Δ p50 ms (ratio)", "Δ p95 ms (ratio)", "Δ p99 ms (ratio)"]
    header += ["editor µs/upd direct → gw", "gw µs/upd", "gw µs/frame"]
    header += ["editor+gw µs/upd (ratio to direct)"]
    rows = []
    for rate in sorted({r.rate for r in results}):
        by_route = {r.route: r for r in results if r.rate == rate}
        if set(by_route) != set(ROUTES):
            continue
        d, g = by_route["direct"], by_route["gateway"]
        direct_cpu = d.us_per_update("editor")
        gateway_cpu = g.us_per_update("editor") + g.us_per_update("gateway")
        rows.append(
            [
                fmt(rate, 0),
                _delta(d.latency_ms.p50, g.latency_ms.p50),
                _delta(d.latency_ms.p95, g.latency_ms.p95),
                _delta(d.latency_ms.p99, g.latency_ms.p99),
                f"{direct_cpu:.0f} → {g.us_per_update('editor'):.0f}",
                fmt(g.us_per_update("gateway"), 0),
                fmt(g.gateway_us_per_frame, 1),
                f"{gateway_cpu:.0f} ({gateway_cpu / direct_cpu:.2f})",
            ]
        )
    return markdown_table(header, rows)


def _delta(direct: float, gateway: float) -> str:
    return f"{gateway - direct:+.2f} ({gateway / direct:.2f})" if direct else "-"


def warnings(results: Sequence[RunResult], settings: Settings) -> list[str]:
    """What makes a figure suspect: a busy generator or machine, a server that fell behind."""
    notes = []
    for r in results:
        name = f"{r.route} at {r.rate:g}/s per doc"
        notes += health_warnings(name, r)
        if r.attempts > 1:
            notes.append(f"{name}: measured at attempt {r.attempts} (the machine was busy)")
        offered = r.rate * settings.docs
        if r.delivered_per_s < 0.95 * offered:
            notes.append(f"{name}: delivered {r.delivered_per_s:.0f}/s of {offered:.0f}/s")
        notes += [f"{name}: FAIL {problem}" for problem in r.problems[:10]]
    return notes


def report(results: Sequence[RunResult], settings: Settings, idle: dict[str, float]) -> str:
    """Everything `main` prints."""
    parts = [
        f"{settings.docs} documents x 2 clients, {settings.writers} writer(s) per document, "
        f"{settings.warmup:g} s warm-up + {settings.duration:g} s measured per run, "
        f"{settings.database}, one editor worker; {settings.layout()}",
        "idle CPU, ms/s without clients: " + ", ".join(f"{k} {v:.1f}" for k, v in idle.items()),
        latency_table(results),
        cpu_table(results),
        comparison_table(results),
    ]
    notes = warnings(results, settings)
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes))
    failed = sum(1 for r in results if not r.ok)
    parts.append(f"{'FAIL' if failed else 'ok'}: {len(results) - failed} of {len(results)} runs")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


async def measure(
    settings: Settings, profile: Path | None = None
) -> tuple[list[RunResult], dict[str, float]]:
    """Start the services, run every (rate, route) pair, stop everything.

    Returns the results and the CPU each party uses while idle (ms per second). With
    `profile`, one more gateway run at the highest rate is sampled with py-spy into that
    file (collapsed stacks); it is left out of the results.
    """
    if settings.generator_cpus:
        pin_current_process(cpu_list(settings.generator_cpus))
    biggest = max(settings.rates) / settings.writers
    gateway_env = {
        # Production limits unless this load (or a generator catching up after a stall)
        # would trip them; a token bucket costs the same per frame whatever its size.
        "GATEWAY_RATE_PER_SECOND": str(max(200, math.ceil(10 * biggest))),
        "GATEWAY_RATE_BURST": str(max(400, math.ceil(20 * biggest))),
        "GATEWAY_MAX_CONNECTIONS_PER_IP": str(max(200, 2 * settings.docs + 10)),
    }
    # The editor limits the message rate per connection the same way (direct route).
    editor_env = {
        "COLLAB_RATE_PER_SECOND": gateway_env["GATEWAY_RATE_PER_SECOND"],
        "COLLAB_RATE_BURST": gateway_env["GATEWAY_RATE_BURST"],
    }
    results: list[RunResult] = []
    with fresh_database(settings.database) as database_url:
        editor = start_editor(
            "load-editor",
            database_url=database_url,
            cpus=settings.editor_cpus,
            workers=1,
            extra_env=editor_env,
        )
        try:
            gateway = start_gateway(
                "load-gateway",
                upstreams=[editor.base_url],
                cpus=settings.gateway_cpus,
                extra_env=gateway_env,
            )
            try:
                assert editor.process is not None and gateway.process is not None
                probes = {
                    "editor": ProcessTreeCpu.of_pid(editor.process.pid),
                    "gateway": ProcessTreeCpu.of_pid(gateway.process.pid),
                    "generator": ProcessTreeCpu.of_pid(os.getpid(), descendants=False),
                }
                if settings.database == "postgres":
                    # The backends serving our database, not the cluster (others use it).
                    probes["postgres"] = ProcessTreeCpu(
                        lambda: postgres_backends(database_url), descendants=False
                    )
                meter = CpuMeter(probes)
                await wait_until_quiet(timeout=QUIET_TIMEOUT)
                idle = await _idle(meter, 3.0)
                bench = Bench(settings, editor.base_url, gateway.base_url, meter)
                # A short unmeasured round first: imports, database connections, caches.
                await bench.run("direct", min(settings.rates), warmup=1, duration=2)
                for rate in settings.rates:
                    for route in ROUTES:
                        results.append(await _measured_run(bench, route, rate))
                if profile is not None:
                    await _profile_gateway(bench, gateway.process.pid, profile)
            finally:
                gateway.stop()
        finally:
            editor.stop()
    return results, idle


async def _measured_run(bench: Bench, route: Route, rate: float) -> RunResult:
    """A run, repeated while something else kept the machine busy (up to `busy_retries`)."""
    retries = bench.settings.busy_retries
    for attempt in range(1, retries + 2):
        result = await bench.run(route, rate)
        result.attempts = attempt
        print(_progress(result), file=sys.stderr, flush=True)
        if result.share("other") <= OTHER_LIMIT or attempt > retries:
            return result
        print("  the machine was busy with other work: measuring again", file=sys.stderr)
    raise AssertionError("unreachable")


async def _profile_gateway(bench: Bench, pid: int, output: Path) -> None:
    rate = max(bench.settings.rates)
    seconds = bench.settings.warmup + bench.settings.duration
    sampler = start_py_spy(pid, output, seconds=seconds)
    if sampler is None:
        print("py-spy is not installed: no profile", file=sys.stderr)
        return
    await bench.run("gateway", rate)
    await asyncio.to_thread(sampler.wait, 60)


async def _idle(meter: CpuMeter, seconds: float) -> dict[str, float]:
    """CPU milliseconds per second of each party with no client (health checks, healing)."""
    before = meter.snapshot()
    await asyncio.sleep(seconds)
    usage = CpuMeter.usage(before, meter.snapshot())
    idle = {name: 1e3 * usage.share(name) for name in usage.processes}
    idle["other"] = 1e3 * usage.unaccounted / usage.seconds
    return idle


def _progress(r: RunResult) -> str:
    return (
        f"{r.route:>7} {r.rate:g}/s per doc: {r.delivered_per_s:.0f} updates/s, "
        f"p50 {r.latency_ms.p50:.2f} ms, p99 {r.latency_ms.p99:.2f} ms, "
        f"{'ok' if r.ok else 'FAIL'}"
    )


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        rates = ()
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates are positive numbers, comma-separated")
    return rates


def _cpus(text: str) -> str | None:
    return None if text.lower() in ("", "none") else text


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Settings from the command line, and the other options (--json, --profile-gateway)."""
    d = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.gateway_cost",
        description="Latency and CPU of the gateway versus connecting to the editor directly.",
    )
    parser.add_argument("--duration", type=float, default=d.duration, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=d.warmup, help="seconds before that")
    parser.add_argument("--docs", type=int, default=d.docs, help="documents (2 clients each)")
    parser.add_argument(
        "--rate",
        type=_rates,
        default=d.rates,
        help="inserts/s per document, one level per value (default: 20,50)",
    )
    parser.add_argument(
        "--writers", type=int, choices=(1, 2), default=d.writers, help="writers per document"
    )
    parser.add_argument("--database", choices=("postgres", "sqlite"), default=d.database)
    for name in ("editor", "gateway", "generator"):
        parser.add_argument(
            f"--{name}-cpus",
            type=_cpus,
            default=getattr(d, f"{name}_cpus"),
            help=f"taskset CPU list for the {name}, or none (default: %(default)s)",
        )
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=d.busy_retries,
        help="repeat a run this often while other work used the machine (default: 1)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results there")
    parser.add_argument(
        "--profile-gateway",
        metavar="FILE",
        type=Path,
        help="one more gateway run, sampled with py-spy (collapsed stacks) into FILE",
    )
    args = parser.parse_args(argv)
    cpus = (args.editor_cpus, args.gateway_cpus, args.generator_cpus)
    if any(cpus) and not can_pin():
        print("taskset or a second CPU is missing: running unpinned", file=sys.stderr)
        cpus = (None, None, None)
    settings = Settings(
        docs=args.docs,
        rates=args.rate,
        writers=args.writers,
        duration=args.duration,
        warmup=args.warmup,
        database=args.database,
        editor_cpus=cpus[0],
        gateway_cpus=cpus[1],
        generator_cpus=cpus[2],
        busy_retries=args.busy_retries,
    )
    return settings, args


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_args(argv)
    runner = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop  # the services' event loop; the generator gets the same

        runner = uvloop.run
    results, idle = runner(measure(settings, args.profile_gateway))
    print("\n" + report(results, settings, idle))
    profile: Path | None = args.profile_gateway
    if profile is not None and profile.exists():
        print(f"\ngateway profile at {max(settings.rates):g}/s per doc ({profile}):")
        print(collapsed_profile_summary(profile))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "settings": asdict(settings),
                    "machine": asdict(Machine.describe()),
                    "idle_cpu_ms_per_s": idle,
                    "results": [r.to_json() for r in results],
                },
                out,
                indent=2,
            )
    return 1 if any(not r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
