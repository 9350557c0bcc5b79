"""The frame every end-to-end fault test shares, and the kill rounds of the SIGKILL tests.

`editing_run` starts two editor instances and the gateways in front of them, begins a
`Run` of writers on one document (online and converged once before any fault) and,
once the test is done with it, stops the writers and asserts that no editor still
holds a connection or a room. The fault and the final check stay in each test: they
are what the test is about.

`kill_rounds` is the loop of the kill tests: aim, kill, converge within the bound,
check what the kill hit, bring the process back, let the writers type on; what is
killed, and what must hold after it, is the `Strike` a test aims.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from tests.faults.harness import (
    CONVERGENCE_BOUND_SECONDS,
    Run,
    assert_idle,
    begin_run,
    start_editors,
    start_gateway,
    wait_gateway_sees,
)
from tests.support.processes import EditorInstance, GatewayInstance


@dataclass(frozen=True)
class Cluster:
    """The processes of a fault run, and the run of writers editing through them."""

    instances: list[EditorInstance]
    fronts: list[GatewayInstance]
    run: Run

    @property
    def gateway(self) -> GatewayInstance:
        """The first gateway (the only one unless the run asked for more)."""
        return self.fronts[0]


@asynccontextmanager
async def editing_run(
    name: str,
    database_url: str,
    *,
    editors: list[EditorInstance],
    gateways: list[GatewayInstance],
    redis_url: str,
    doc_id: str | None = None,
    fronts: int = 1,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """Two editors behind `fronts` gateways, writers editing `doc_id` (default: `name`).

    `name` names the run's figures (`test-artifacts/faults/<name>.json`). After the
    block the writers are stopped; when it succeeded, no editor may then hold a
    connection or a room. A failure is reported as it is, without that check. Tests
    get it from the `editing_run` fixture, with the processes registered for clean-up.
    """
    instances = await start_editors(editors, database_url, redis_url, extra_env=extra_env)
    names = ["faults-gateway"] if fronts == 1 else [f"faults-gateway-{i}" for i in range(fronts)]
    started = [await start_gateway(gateways, instances, name=front) for front in names]
    run = await begin_run(name, doc_id or name, instances, started)
    try:
        yield Cluster(instances, started, run)
    finally:
        await run.close()
    await assert_idle(instances)


class EditingRun(Protocol):
    """`editing_run` with the test's editors, gateways and Redis bound (the fixture)."""

    def __call__(
        self,
        name: str,
        database_url: str,
        *,
        doc_id: str | None = None,
        fronts: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Cluster]: ...


def close_codes(run: Run) -> list[int | None]:
    """Every close code the writers have seen so far, sorted (None: closed without one)."""
    return sorted({d.code for w in run.writers for d in w.disconnects}, key=str)


@dataclass(frozen=True)
class Strike:
    """One kill, aimed: its name in failure messages, the kill, and what must hold after.

    `aftermath` is called once every writer has converged, with the number of writer
    disconnects the kill caused: it checks what the kill hit, records its figures and
    brings the killed process back.
    """

    what: str
    kill: Callable[[], None]
    aftermath: Callable[[int], Awaitable[None]]


# Given the run, its editors and the round (from 0): the target of that round, aimed.
Aim = Callable[[Run, list[EditorInstance], int], Awaitable[Strike]]


async def kill_rounds(cluster: Cluster, aim: Aim, *, kills: int) -> None:
    """`kills` times: kill, converge within the bound, recover; the `kills` window and figure."""
    run = cluster.run
    kills_from = time.monotonic()
    for round_ in range(kills):
        strike = await aim(run, cluster.instances, round_)
        due = run.checkpoint()
        disconnects = run.disconnect_count()
        killed_at = time.monotonic()
        strike.kill()
        took = await run.converge_after(killed_at, due, what=strike.what)
        assert took < CONVERGENCE_BOUND_SECONDS, f"{strike.what}: converged after {took:.2f}s"
        await strike.aftermath(run.disconnect_count() - disconnects)
        await wait_gateway_sees(cluster.gateway, len(cluster.instances))
        await asyncio.sleep(1.0)  # writers keep typing on the survivors meanwhile
    run.window("kills", kills_from, time.monotonic())
    run.figures["kills"] = kills
