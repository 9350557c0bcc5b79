"""SIGKILL of editors while people type: nothing is lost, everyone converges within 5 s.

Two editor instances (two gunicorn workers each) share Redis and PostgreSQL behind the
gateway; six resilient writers keep inserting unique tokens into one document. After
every kill the time until every writer is back online and holds every token inserted
before the kill is measured and must stay under the promised bound; at the end every
insert must be present exactly once in every writer and in the stored document.
"""

from __future__ import annotations

import asyncio
import time

from tests.faults.harness import (
    CONVERGENCE_BOUND_SECONDS,
    assert_idle,
    begin_run,
    established_connections,
    kill_worker,
    start_editors,
    start_gateway,
    stored_tokens,
    wait_for_workers,
    wait_gateway_sees,
    worker_pids,
)
from tests.support.resilient import split_tokens
from tests.support.yclient import YClient, wait_until

KILLS = 3


class RelayProbe:
    """A writer and a watcher straight on one editor, never reconnecting.

    Whatever the watcher received was relayed, so it must be durable: once both are
    gone with the editor, nobody can push those updates again, and the stored
    document must still hold every one of them (DESIGN: "No lost edits").
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.writer = YClient(url, name="probe-writer")
        self.watcher = YClient(url, name="probe-watcher")
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.writer.connect()
        await self.watcher.connect()
        self.task = asyncio.create_task(self._write())
        await wait_until(lambda: len(str(self.watcher.text)) > 0, what="probe relay")

    async def _write(self) -> None:
        for n in range(100_000):
            self.writer.insert(f"p.{n};")
            await asyncio.sleep(0.01)

    async def seen_after_death(self) -> set[str]:
        """Stop writing once the editor is dead; what the watcher holds."""
        assert self.task is not None
        await asyncio.wait_for(self.watcher.closed.wait(), 10)
        self.task.cancel()
        for client in (self.writer, self.watcher):
            await client.close()
        return set(split_tokens(str(self.watcher.text)))


async def test_sigkill_of_a_whole_editor_instance_three_times_loses_no_insert(
    editors, gateways, pg_database, redis_server
):
    instances = await start_editors(editors, pg_database.url, redis_server.url)
    gateway = await start_gateway(gateways, instances)
    run = await begin_run("sigkill-instance", "kill-instance", instances, [gateway])
    try:
        kills_from = time.monotonic()
        for round_ in range(KILLS):
            victim = run.busiest(instances)
            survivor = next(instance for instance in instances if instance is not victim)
            hit = len(run.on(victim.base_url))
            probe = RelayProbe(f"{victim.ws_url}/kill-probe-{round_}")
            await probe.start()
            await asyncio.sleep(0.3)

            due = run.checkpoint()
            disconnects = run.disconnect_count()
            killed_at = time.monotonic()
            victim.kill()  # master and both workers at once: nothing gets to flush
            took = await run.converge_after(killed_at, due, what=f"SIGKILL #{round_ + 1}")
            assert took < CONVERGENCE_BOUND_SECONDS
            assert hit > 0 and run.disconnect_count() > disconnects, "the kill hit no writer"
            run.record("writers_on_victim", hit)

            seen = await probe.seen_after_death()
            stored = await stored_tokens(survivor, f"kill-probe-{round_}")
            assert seen, "the probe's watcher received nothing before the kill"
            assert seen <= set(stored), (
                f"{len(seen - set(stored))} relayed updates lost by SIGKILL: "
                f"{sorted(seen - set(stored))[:10]}"
            )
            run.record("probe_relayed_and_stored", len(seen))

            await asyncio.to_thread(victim.start, 60)
            await wait_gateway_sees(gateway, 2)
            await asyncio.sleep(1.0)  # writers keep typing on the survivor meanwhile
        run.window("kills", kills_from, time.monotonic())
        run.figures["kills"] = KILLS
        await run.final_check(instances)
    finally:
        await run.close()
    await assert_idle(instances)


async def test_sigkill_of_a_single_gunicorn_worker_three_times_loses_no_insert(
    editors, gateways, pg_database, redis_server
):
    instances = await start_editors(editors, pg_database.url, redis_server.url)
    gateway = await start_gateway(gateways, instances)
    run = await begin_run("sigkill-worker", "kill-worker", instances, [gateway])
    try:
        kills_from = time.monotonic()
        for round_ in range(KILLS):
            instance = run.busiest(instances)
            workers = worker_pids(instance)
            assert len(workers) == 2, f"{instance.name} runs workers {workers}"
            # The worker holding the most sockets (from /proc): the one serving writers.
            held = {pid: established_connections(pid, instance.port) for pid in workers}
            victim = max(held, key=lambda pid: held[pid])

            due = run.checkpoint()
            disconnects = run.disconnect_count()
            killed_at = time.monotonic()
            kill_worker(victim)  # gunicorn's master lives on and respawns it
            took = await run.converge_after(killed_at, due, what=f"worker SIGKILL #{round_ + 1}")
            assert took < CONVERGENCE_BOUND_SECONDS
            assert run.disconnect_count() > disconnects, f"killing worker {held} hit no writer"
            run.record("sockets_on_killed_worker", held[victim])

            respawned = await wait_for_workers(instance, 2)
            assert victim not in respawned
            await wait_gateway_sees(gateway, 2)
            await asyncio.sleep(1.0)
        run.window("kills", kills_from, time.monotonic())
        run.figures["kills"] = KILLS
        await run.final_check(instances)
    finally:
        await run.close()
    await assert_idle(instances)
