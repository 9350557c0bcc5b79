"""A rolling restart of every editor and every gateway while people type: nothing is lost.

As a deployment rolls: one process at a time gets SIGTERM, drains (editors close their
sockets with 1012 after flushing; a gateway fails readiness, then closes with 1012
after its drain period), exits, and starts again before the next one goes. Two
gateways stand behind a load balancer: writers take turns between them on each
reconnect. After each step the writers must converge within 5 s; at the end every
insert is present exactly once in every writer and in the stored document.
"""

from __future__ import annotations

import asyncio
import time

from tests.faults.harness import (
    CONVERGENCE_BOUND_SECONDS,
    wait_for_readiness,
    wait_gateway_sees,
)
from tests.faults.scenario import EditingRun, close_codes
from tests.support.processes import EditorInstance, GatewayInstance, PostgresDatabase


async def test_rolling_restart_of_every_editor_and_gateway_loses_no_insert(
    editing_run: EditingRun, pg_database: PostgresDatabase
) -> None:
    async with editing_run(
        "rolling-restart", pg_database.url, doc_id="rolling", fronts=2
    ) as cluster:
        run, instances, fronts = cluster.run, cluster.instances, cluster.fronts
        rolling_from = time.monotonic()
        rolling: list[EditorInstance | GatewayInstance] = [*instances, *fronts]
        for process in rolling:
            if isinstance(process, EditorInstance):
                hit = len(run.on(process.base_url))
            else:
                hit = len(run.through(process))
            disconnects = run.disconnect_count()
            started = time.monotonic()
            process.terminate()
            code = await asyncio.to_thread(process.wait, 60)
            exited_at = time.monotonic()
            run.record("exit_codes", {process.name: code})
            run.record("drain_seconds", {process.name: round(exited_at - started, 3)})
            # Once the process is gone, everyone it served must be live again elsewhere.
            due = run.checkpoint()
            took = await run.converge_after(exited_at, due, what=f"{process.name} exited")
            assert took < CONVERGENCE_BOUND_SECONDS
            assert code == 0, f"{process.name} exited with {code} after SIGTERM"
            run.record("writers_on_restarted_process", {process.name: hit})
            if hit:
                assert run.disconnect_count() > disconnects

            await asyncio.to_thread(process.start, 60)
            for front in fronts:
                await wait_for_readiness(front, 200, timeout=30, what="rolling restart")
                await wait_gateway_sees(front, len(instances))
            await asyncio.sleep(1.0)  # typing goes on before the next one rolls

        run.window("rolling_restart", rolling_from, time.monotonic())
        codes = close_codes(run)
        run.figures["close_codes_seen"] = codes
        # A graceful restart says so: 1012 "restarting; reconnect", from editor or gateway.
        assert codes == [1012], f"writers saw close codes {codes} during a graceful restart"
        await run.final_check(instances)
