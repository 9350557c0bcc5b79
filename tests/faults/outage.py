"""What a dependency outage must and must not do, checked alike by every outage test.

- While PostgreSQL or Redis is gone, every editor's /readyz answers 503 naming it, and
  only it (`assert_not_ready`).
- While PostgreSQL is gone nothing new becomes durable, so nothing typed after the
  `relay_cut` may reach another writer (`assert_nothing_relayed`).
- Once it is back, every writer converges within the bound, every editor is ready
  again, and typing goes on for a second (`recover`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, get_args

from tests.faults.harness import (
    CONVERGENCE_BOUND_SECONDS,
    Run,
    get,
    readyz,
    wait_for_readiness,
)
from tests.support.processes import EditorInstance

# The dependencies an editor's /readyz checks, by the names of its checks.
Dependency = Literal["database", "redis"]
DEPENDENCIES: tuple[Dependency, ...] = get_args(Dependency)


async def assert_not_ready(
    instances: list[EditorInstance], down: Dependency
) -> list[dict[str, Any]]:
    """Every editor's /readyz answers 503 naming `down` (and only it); the bodies."""
    expected = {check: "unavailable" if check == down else "ok" for check in DEPENDENCIES}
    answers = await asyncio.gather(*(readyz(instance) for instance in instances))
    for status, body in answers:
        assert status == 503, (status, body)
        assert body["checks"] == expected, (expected, body)
    return [body for _, body in answers]


def relay_cut(run: Run) -> dict[str, int]:
    """How many inserts each writer has made so far: none made later may be relayed yet."""
    return {writer.name: len(writer.inserted) for writer in run.writers}


def inserted_since(run: Run, cut: dict[str, int]) -> dict[str, int]:
    """How many inserts each writer has made since the cut."""
    return {writer.name: len(writer.inserted) - cut[writer.name] for writer in run.writers}


def relayed_during_outage(run: Run, cut: dict[str, int]) -> dict[str, list[str]]:
    """Tokens written during the outage that reached another writer: must stay empty."""
    leaked: dict[str, list[str]] = {}
    for writer in run.writers:
        held = set(writer.tokens())
        foreign = [
            token
            for other in run.writers
            if other is not writer
            for token in other.inserted[cut[other.name] :]
            if token in held
        ]
        if foreign:
            leaked[writer.name] = foreign[:5]
    return leaked


def assert_nothing_relayed(run: Run, cut: dict[str, int]) -> None:
    """No writer holds another writer's insert made after the cut."""
    leaked = relayed_during_outage(run, cut)
    assert not leaked, f"updates relayed while the database was down: {leaked}"


async def assert_nothing_relayed_until(run: Run, cut: dict[str, int], deadline: float) -> int:
    """Check every 0.2 s until `deadline` (monotonic) that nothing was relayed; the checks."""
    checks = 0
    while time.monotonic() < deadline:
        assert_nothing_relayed(run, cut)
        checks += 1
        await asyncio.sleep(0.2)
    return checks


async def pending_updates(instance: EditorInstance) -> float:
    """collab_pending_updates of an editor instance (summed over its workers)."""
    response = await get(f"{instance.base_url}/metrics")
    for line in response.text.splitlines():
        if line.startswith("collab_pending_updates "):
            return float(line.split()[1])
    raise AssertionError("collab_pending_updates is missing from /metrics")


async def recover(
    run: Run,
    instances: list[EditorInstance],
    back_at: float,
    *,
    what: str,
    ready_after: str,
    window: str = "after_outage",
    also: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """The dependency is back since `back_at`: converge within the bound, be ready again.

    Records `convergence_seconds` (named `what` in a failure) and each editor's
    `ready_again_seconds` (`ready_after` names the event in a failure). `also` waits
    for whatever else must be back before typing goes on for a second, the inserts of
    which are reported as the propagation `window`.
    """
    took = await run.converge_after(back_at, run.checkpoint(), what=what)
    assert took < CONVERGENCE_BOUND_SECONDS, f"{what}: converged after {took:.2f}s"
    for instance in instances:
        ready = await wait_for_readiness(instance, 200, timeout=5, what=ready_after)
        run.record("ready_again_seconds", round(ready, 3))
    if also is not None:
        await also()
    await asyncio.sleep(1.0)
    run.window(window, back_at, time.monotonic())
