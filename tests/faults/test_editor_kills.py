"""SIGKILL of editors while people type: nothing is lost, everyone converges within 5 s.

Two editor instances (two gunicorn workers each) share Redis and PostgreSQL behind the
gateway; six resilient writers keep inserting unique tokens into one document. After
every kill the time until every writer is back online and holds every token inserted
before the kill is measured and must stay under the promised bound; at the end every
insert must be present exactly once in every writer and in the stored document.
"""

from __future__ import annotations

import asyncio

from tests.faults.harness import (
    Run,
    established_connections,
    kill_worker,
    stored_tokens,
    wait_for_workers,
    worker_pids,
)
from tests.faults.scenario import EditingRun, Strike, kill_rounds
from tests.support.processes import EditorInstance, PostgresDatabase
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


async def aim_at_the_busiest_instance(
    run: Run, instances: list[EditorInstance], round_: int
) -> Strike:
    """The whole editor instance most writers are on, with a relay probe straight on it."""
    victim = run.busiest(instances)
    survivor = next(instance for instance in instances if instance is not victim)
    hit = len(run.on(victim.base_url))
    probe_doc = f"kill-probe-{round_}"
    probe = RelayProbe(f"{victim.ws_url}/{probe_doc}")
    await probe.start()
    await asyncio.sleep(0.3)

    async def aftermath(closed: int) -> None:
        assert hit > 0 and closed > 0, "the kill hit no writer"
        run.record("writers_on_victim", hit)

        seen = await probe.seen_after_death()
        stored = await stored_tokens(survivor, probe_doc)
        assert seen, "the probe's watcher received nothing before the kill"
        assert seen <= set(stored), (
            f"{len(seen - set(stored))} relayed updates lost by SIGKILL: "
            f"{sorted(seen - set(stored))[:10]}"
        )
        run.record("probe_relayed_and_stored", len(seen))

        await asyncio.to_thread(victim.start, 60)

    # master and both workers at once: nothing gets to flush
    return Strike(f"SIGKILL #{round_ + 1}", victim.kill, aftermath)


async def aim_at_the_busiest_worker(
    run: Run, instances: list[EditorInstance], round_: int
) -> Strike:
    """The gunicorn worker holding the most sockets on the instance most writers are on."""
    instance = run.busiest(instances)
    workers = worker_pids(instance)
    assert len(workers) == 2, f"{instance.name} runs workers {workers}"
    # The worker holding the most sockets (from /proc): the one serving writers.
    held = {pid: established_connections(pid, instance.port) for pid in workers}
    victim = max(held, key=lambda pid: held[pid])

    async def aftermath(closed: int) -> None:
        assert closed > 0, f"killing worker {held} hit no writer"
        run.record("sockets_on_killed_worker", held[victim])

        respawned = await wait_for_workers(instance, 2)
        assert victim not in respawned

    # gunicorn's master lives on and respawns it
    return Strike(f"worker SIGKILL #{round_ + 1}", lambda: kill_worker(victim), aftermath)


async def test_sigkill_of_a_whole_editor_instance_three_times_loses_no_insert(
    editing_run: EditingRun, pg_database: PostgresDatabase
) -> None:
    async with editing_run("sigkill-instance", pg_database.url, doc_id="kill-instance") as cluster:
        await kill_rounds(cluster, aim_at_the_busiest_instance, kills=KILLS)
        await cluster.run.final_check(cluster.instances)


async def test_sigkill_of_a_single_gunicorn_worker_three_times_loses_no_insert(
    editing_run: EditingRun, pg_database: PostgresDatabase
) -> None:
    async with editing_run("sigkill-worker", pg_database.url, doc_id="kill-worker") as cluster:
        await kill_rounds(cluster, aim_at_the_busiest_worker, kills=KILLS)
        await cluster.run.final_check(cluster.instances)
