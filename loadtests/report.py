"""What `loadtests.scenarios` prints: per-scenario tables with ours, reference and the ratio
ours / reference side by side, the saturation steps, a headline summary and warnings."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loadtests.harness import fmt, health_warnings, markdown_table
from loadtests.workload import RunResult

if TYPE_CHECKING:
    from loadtests.scenarios import Settings

# A generator above this share of its core, or this late, makes the latencies its own.
GENERATOR_BUSY = 0.85
GENERATOR_LATE_MS = 20.0
# The reference run each of our runs is compared with (cross-pod: its single server).
REFERENCE_OF = {"cross-pod steady": "steady", "cross-pod hot": "hot", "cross-pod hot, split": "hot"}


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a side-by-side table: a label and how to read it off a result."""

    label: str
    value: Callable[[RunResult], float]
    digits: int = 1


def _extra(name: str, scale: float = 1.0) -> Callable[[RunResult], float]:
    return lambda r: float(r.extra.get(name, math.nan)) * scale


def _full(q: str) -> Callable[[RunResult], float]:
    return lambda r: float(r.extra.get("time_to_full_ms", {}).get(q, math.nan))


LATENCY_P99 = Row("latency p99 ms", lambda r: r.latency_ms.p99, 2)
SERVER_US = Row("server CPU µs/delivery", lambda r: r.us_per_delivery("server"))
RSS_PER_IDLE = Row("RSS per idle connection KiB", _extra("rss_per_connection", 1 / 1024))
TIME_TO_FULL_P99 = Row("time to full content p99 ms", _full("p99"))
COMMON_ROWS = (
    Row("connect+sync p50 ms", lambda r: r.connect_ms.p50),
    Row("connect+sync p99 ms", lambda r: r.connect_ms.p99),
    Row("connect+sync max ms", lambda r: r.connect_ms.max),
    Row("latency p50 ms", lambda r: r.latency_ms.p50, 2),
    Row("latency p95 ms", lambda r: r.latency_ms.p95, 2),
    LATENCY_P99,
    Row("latency max ms", lambda r: r.latency_ms.max),
    Row("inserts/s", lambda r: r.inserts_per_s, 0),
    Row("deliveries/s offered", lambda r: r.offered_per_s, 0),
    Row("deliveries/s", lambda r: r.delivered_per_s, 0),
    Row("update frames read/s (echoes incl.)", lambda r: r.update_frames_per_s, 0),
    Row("server CPU, cores", lambda r: r.share("server"), 2),
    SERVER_US,
    Row("server+db CPU µs/delivery", lambda r: r.server_db_us_per_delivery()),
    Row("deliveries/s per server core", lambda r: r.deliveries_per_core(), 0),
    Row("database CPU, cores", lambda r: r.share("postgres"), 2),
    Row("server RSS MiB", _extra("rss_after", 1 / 2**20)),
)
IDLE_ROWS = (
    Row("idle connections", _extra("connections"), 0),
    RSS_PER_IDLE,
    Row("server CPU while idle ms/s", _extra("idle_server_cpu_ms_per_s")),
)
LATE_ROWS = (
    Row("time to full content p50 ms", _full("p50")),
    TIME_TO_FULL_P99,
    Row("time to full content max ms", _full("max")),
    Row("server CPU ms per joiner", _extra("server_cpu_ms_per_joiner")),
    Row("document bytes (Yjs update)", _extra("document_bytes"), 0),
    Row("history build s", _extra("history_build_s")),
)
HEALTH_ROWS = (
    Row("generator CPU, cores", lambda r: r.share("generator"), 2),
    Row("generator loop lag p99 ms", lambda r: r.generator_lag_p99_ms, 2),
    Row("inserts sent late p99 ms", lambda r: r.schedule_late_p99_ms, 2),
    Row("other CPU, cores", lambda r: r.share("other"), 2),
)


def _part_row(name: str) -> Row:
    return Row(f"  of which {name} µs/delivery", lambda r: r.us_per_delivery(name))


def ratio(ours: float, theirs: float) -> float:
    """ours / reference, NaN when either is missing or the reference is 0."""
    if math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return math.nan
    return ours / theirs


def _cell(r: RunResult | None, row: Row) -> float:
    return math.nan if r is None else row.value(r)


def side_by_side(ours: RunResult | None, theirs: RunResult | None) -> str:
    """Every row either result has, with the ratio; the verdict last."""
    rows = [*COMMON_ROWS]
    either = ours or theirs
    scenario = either.scenario if either is not None else ""
    if ours is not None and len(ours.server_probes) > 1:
        # Several processes make "the server" (cross-pod): what each costs.
        at = rows.index(SERVER_US) + 1
        rows[at:at] = [_part_row(name) for name in ours.server_probes]
    if scenario == "idle":
        rows[0:0] = IDLE_ROWS
    if scenario == "late":
        rows[0:0] = LATE_ROWS
    rows += HEALTH_ROWS
    table = []
    for row in rows:
        a, b = _cell(ours, row), _cell(theirs, row)
        if math.isnan(a) and math.isnan(b):
            continue
        table.append([row.label, fmt(a, row.digits), fmt(b, row.digits), fmt(ratio(a, b), 2)])
    table.append(["converged", _verdict(ours), _verdict(theirs), ""])
    return markdown_table(["", "ours", "reference", "ours/ref"], table)


def _verdict(r: RunResult | None) -> str:
    return "-" if r is None else ("ok" if r.ok else "FAIL")


def _find(results: Sequence[RunResult], server: str, scenario: str) -> RunResult | None:
    return next((r for r in results if r.server == server and r.scenario == scenario), None)


def scenario_sections(results: Sequence[RunResult]) -> list[str]:
    """One titled table per scenario (saturation apart)."""
    sections = []
    names = list(dict.fromkeys(r.scenario for r in results if r.scenario != "saturation"))
    for name in names:
        ours = _find(results, "ours", name)
        theirs = _find(results, "reference", REFERENCE_OF.get(name, name))
        lines = [f"### {name}"]
        if ours is not None:
            lines.append(f"ours: {ours.topology}; {ours.load}")
        if theirs is not None:
            lines.append(f"reference: {theirs.topology}; {theirs.load}")
        if name in REFERENCE_OF:
            lines.append(f"(reference column: the single reference server's {REFERENCE_OF[name]})")
        if name == "late":
            lines.append("(latency rows: the history's inserts to a watcher, sent as one burst)")
        if name == "idle":
            lines.append("(latency rows: one insert per document after the idle window)")
        upstreams = ours.extra.get("clients_per_upstream") if ours else None
        if upstreams:
            lines.append(f"clients per editor (gateway's choice): {upstreams}")
        sections.append("\n".join(lines) + "\n\n" + side_by_side(ours, theirs))
    return sections


# --------------------------------------------------------------------------------------
# Saturation
# --------------------------------------------------------------------------------------


def generator_limit(r: RunResult) -> str:
    """Why the generator, not the server, was the limit of a run ("" when it was not)."""
    share = r.share("generator")
    if share > GENERATOR_BUSY:
        return f"generator-bound (it used {share:.0%} of its core)"
    if r.generator_lag_p99_ms > GENERATOR_LATE_MS:
        # A lagging loop while using little CPU: other work ran on the generator's core.
        lag = r.generator_lag_p99_ms
        return f"generator delayed (loop {lag:.0f} ms late p99 at {share:.0%} of its core)"
    return ""


def held_up(r: RunResult) -> str:
    """Inserts left late while the generator's loop was on time: their sockets did not
    take the frames, i.e. the server did not read them (backpressure); "" otherwise."""
    if r.schedule_late_p99_ms > GENERATOR_LATE_MS and not generator_limit(r):
        return f"writers held up by the server ({r.schedule_late_p99_ms:.0f} ms late p99)"
    return ""


@dataclass(frozen=True, slots=True)
class Capacity:
    """The outcome of one server's saturation steps."""

    deliveries_per_s: float  # highest sustained
    per_core: float  # at that step, per core of server CPU
    why_stopped: str

    @property
    def server_limited(self) -> bool:
        """Whether the steps stopped at the server's limit (not the generator's, not the
        last step): only then is the figure the server's capacity, not a lower bound."""
        return self.why_stopped.startswith(("p99 over", "fell behind", "writers held up"))


def capacity(steps: Sequence[RunResult]) -> Capacity:
    sustained = [r for r in steps if r.extra.get("verdict") == "sustained"]
    best = max(sustained, key=lambda r: r.delivered_per_s, default=None)
    last = steps[-1].extra.get("verdict", "") if steps else "no step ran"
    why = "limit not reached within the steps" if last == "sustained" else str(last)
    if best is None:
        return Capacity(math.nan, math.nan, why)
    return Capacity(best.delivered_per_s, best.deliveries_per_core(), why)


def saturation_section(results: Sequence[RunResult]) -> str:
    steps = [r for r in results if r.scenario == "saturation"]
    if not steps:
        return ""
    header = ["server", "step", "offered/s", "delivered/s", "p50 ms", "p99 ms"]
    header += ["server cores", "deliveries/core", "generator cores", "gen lag p99 ms"]
    header += ["late p99 ms", "verdict"]
    rows = [
        [
            r.server,
            str(r.extra.get("step", "")),
            fmt(r.offered_per_s, 0),
            fmt(r.delivered_per_s, 0),
            fmt(r.latency_ms.p50, 2),
            fmt(r.latency_ms.p99, 2),
            fmt(r.share("server"), 2),
            fmt(r.deliveries_per_core(), 0),
            fmt(r.share("generator"), 2),
            fmt(r.generator_lag_p99_ms, 1),
            fmt(r.schedule_late_p99_ms, 1),
            str(r.extra.get("verdict", "")),
        ]
        for r in steps
    ]
    lines = ["### saturation", f"step 1: {steps[0].load}; each step raises every writer's rate"]
    for server in ("ours", "reference"):
        mine = [r for r in steps if r.server == server]
        if mine:
            c = capacity(mine)
            lines.append(
                f"{server}: highest sustained {fmt(c.deliveries_per_s, 0)} deliveries/s, "
                f"{fmt(c.per_core, 0)} per server core; stopped: {c.why_stopped}"
            )
    return "\n".join(lines) + "\n\n" + markdown_table(header, rows)


# --------------------------------------------------------------------------------------
# Summary and warnings
# --------------------------------------------------------------------------------------

HEADLINES: tuple[tuple[str, Row], ...] = (
    ("steady", LATENCY_P99),
    ("steady", SERVER_US),
    ("hot", SERVER_US),
    ("hot", LATENCY_P99),
    ("idle", RSS_PER_IDLE),
    ("late", TIME_TO_FULL_P99),
    # Every cross-pod run: CPU first, then latency.
    *((name, row) for name in REFERENCE_OF for row in (SERVER_US, LATENCY_P99)),
)


def _summary_row(
    scenario: str, figure: str, ours: float, theirs: float, note: str, *, comparable: bool = True
) -> dict[str, Any]:
    """One headline figure of the summary (a JSON object in --json)."""
    return {
        "scenario": scenario,
        "figure": figure,
        "ours": ours,
        "reference": theirs,
        "ratio": ratio(ours, theirs) if comparable else math.nan,
        "note": note,
    }


def summary_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """The headline figures, ours and reference, with the ratio."""
    rows = []
    for scenario, row in HEADLINES:
        ours = _find(results, "ours", scenario)
        theirs = _find(results, "reference", REFERENCE_OF.get(scenario, scenario))
        if ours is None and (theirs is None or scenario in REFERENCE_OF):
            continue
        note = (
            f"reference: its single server's {REFERENCE_OF[scenario]}"
            if scenario in REFERENCE_OF
            else ""
        )
        rows.append(_summary_row(scenario, row.label, _cell(ours, row), _cell(theirs, row), note))
    if any(r.scenario == "saturation" for r in results):
        rows += _capacity_rows(results)
    return rows


def _capacity_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Saturation's headline; no ratio unless both stopped at their server's limit."""
    ours, theirs = (
        capacity([r for r in results if r.scenario == "saturation" and r.server == server])
        for server in ("ours", "reference")
    )
    comparable = ours.server_limited and theirs.server_limited
    note = "" if comparable else f"lower bound: ours {ours.why_stopped}; ref {theirs.why_stopped}"
    return [
        _summary_row("saturation", label, a, b, note, comparable=comparable)
        for label, a, b in (
            ("highest sustained deliveries/s", ours.deliveries_per_s, theirs.deliveries_per_s),
            ("… per server core", ours.per_core, theirs.per_core),
        )
    ]


def summary_table(results: Sequence[RunResult]) -> str:
    rows = [
        [
            row["scenario"],
            row["figure"],
            fmt(row["ours"]),
            fmt(row["reference"]),
            fmt(row["ratio"], 2),
            row.get("note", ""),
        ]
        for row in summary_rows(results)
    ]
    return markdown_table(["scenario", "figure", "ours", "reference", "ours/ref", "note"], rows)


def warnings(results: Sequence[RunResult]) -> list[str]:
    """What makes a figure suspect, and every failure."""
    notes = []
    for r in results:
        name = f"{r.server} {r.scenario}" + (
            f" step {r.extra['step']}" if "step" in r.extra else ""
        )
        notes += health_warnings(name, r)
        paced = r.scenario in ("steady", "hot") or r.scenario.startswith("cross-pod")
        if paced and r.delivered_per_s < 0.95 * r.offered_per_s:
            offered = f"{r.offered_per_s:.0f}/s offered"
            notes.append(f"{name}: delivered {r.delivered_per_s:.0f}/s of {offered}")
        if r.extra.get("redelivered"):
            notes.append(f"{name}: {r.extra['redelivered']} stamps reached a client twice")
        notes += [f"{name}: FAIL {problem}" for problem in r.problems[:10]]
        if len(r.problems) > 10:
            notes.append(f"{name}: … and {len(r.problems) - 10} more problems")
    return notes


def progress(r: RunResult) -> str:
    """One line per run while the session goes on (stderr)."""
    step = f" step {r.extra['step']}" if "step" in r.extra else ""
    return (
        f"  {r.server} {r.scenario}{step}: {r.delivered_per_s:.0f} deliveries/s, "
        f"p50 {r.latency_ms.p50:.2f} ms, p99 {r.latency_ms.p99:.2f} ms, "
        f"server {r.us_per_delivery('server'):.1f} µs/delivery, "
        f"generator {r.share('generator'):.0%}, {'ok' if r.ok else 'FAIL'}"
        + (f" ({r.extra['scenario_s']:.0f} s)" if "scenario_s" in r.extra else "")
    )


def render(
    results: Sequence[RunResult], settings: Settings, env: dict[str, Any], elapsed: float
) -> str:
    """Everything `main` prints after the runs."""
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    reference = env.get("reference")
    versions = f"Python {env.get('python')}, Node {env.get('node')}"
    head = [
        f"## Load scenarios ({settings.mode} mode, {elapsed:.0f} s): ours vs {reference}",
        f"machine: {env.get('cpus')} CPUs ({env.get('cpu_model')}), {env.get('memory_gib')} GiB, "
        f"Linux {env.get('kernel')}, {versions}; {packages}",
        f"layout: {settings.layout()}; {settings.warmup:g} s warm-up + {settings.duration:g} s "
        f"measured per run; our database: {settings.database}",
        "delivery = one insert's update frame read by one client other than its writer; "
        "ratios are ours / reference",
    ]
    parts = ["\n".join(head), "### summary\n\n" + summary_table(results)]
    parts += scenario_sections(results)
    saturation = saturation_section(results)
    if saturation:
        parts.append(saturation)
    notes = warnings(results)
    if notes:
        parts.append("### warnings\n\n" + "\n".join(f"- {note}" for note in notes))
    failed = sum(1 for r in results if not r.ok)
    verdict = "FAIL" if failed or not results else "ok"
    parts.append(f"{verdict}: {len(results) - failed} of {len(results)} runs converged")
    return "\n\n".join(parts)
