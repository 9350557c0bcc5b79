"""Redis, the transport between processes, fails while people type: nothing is lost.

Redis restarts (its connections are closed, it comes back empty), or it stops
answering for 10 s. Readiness of every editor reports it (503) and recovers (200);
within 5 s of Redis being back every writer holds every insert, and at the end every
insert is present exactly once in every writer and in the stored document.

"Unreachable" is simulated with SIGSTOP/SIGCONT of redis-server rather than with a
proxy that cuts connections: a network partition or a hung server (swap, a stalled
fork, a paused VM) shows up as silence, not as a reset. Connections stay open, new
ones are even accepted by the kernel, and nothing answers: only timeouts can tell.
A connection reset is what the restart test covers already.

While Redis hangs, publishing must not hold anything up (it is queued off the commit
path, collab/fanout.py): every insert reaches every other writer within the promised
5 s, on the same process (local relay after the commit), on another worker of the same
editor and on the other editor (both through the heal loop reading the log). Probes
placed on known processes measure each of the three paths separately.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.faults.harness import CONVERGENCE_BOUND_SECONDS, Run, group_subscriptions
from tests.faults.outage import assert_not_ready, recover
from tests.faults.scenario import EditingRun
from tests.support.processes import EditorInstance, PostgresDatabase, RedisServer
from tests.support.resilient import split_tokens
from tests.support.yclient import YClient

OUTAGE_SECONDS = 10.0


class ProcessProbes:
    """Clients on known server processes of another document, typing and timing arrivals.

    Two on one worker of the first editor, one on its other worker, one on the second
    editor: every pair is same-process, same-editor (other worker) or across editors,
    for certain (the X-Collab-Instance header names the process of a direct socket).
    """

    def __init__(self) -> None:
        self.clients: list[YClient] = []
        self.placement: dict[str, tuple[str, str]] = {}  # name -> (editor, process)
        self.inserted_at: dict[str, float] = {}
        self.seen_at: dict[str, dict[str, float]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def place(self, instances: list[EditorInstance], doc_id: str) -> None:
        # Clients per process wanted on each editor, the fullest first.
        for instance, wanted in ((instances[0], [2, 1]), (instances[1], [1])):
            by_process: dict[str, list[YClient]] = {}
            for _ in range(200):
                client = await YClient(f"{instance.ws_url}/{doc_id}").connect()
                group = by_process.setdefault(client.instance, [])
                group.append(client)
                counts = sorted(map(len, by_process.values()), reverse=True)
                if len(counts) > len(wanted) or any(
                    have > most for have, most in zip(counts, wanted, strict=False)
                ):
                    group.remove(client)  # does not fit the layout: try again
                    if not group:
                        del by_process[client.instance]
                    await client.close()
                elif counts == wanted:
                    break
            else:
                raise AssertionError(f"probes never spread over {instance.name} as {wanted}")
            for process, group in by_process.items():
                for client in group:
                    client.name = f"probe{len(self.clients)}"
                    self.placement[client.name] = (instance.base_url, process)
                    self.clients.append(client)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._type(c)) for c in self.clients]
        self._tasks.append(asyncio.create_task(self._watch()))

    async def _type(self, client: YClient) -> None:
        for n in range(100_000):
            token = f"{client.name}.{n}"
            client.insert(token + ";")
            self.inserted_at[token] = time.monotonic()
            await asyncio.sleep(0.1)

    async def _watch(self) -> None:
        while True:
            now = time.monotonic()
            for client in self.clients:
                seen = self.seen_at.setdefault(client.name, {})
                for token in set(split_tokens(str(client.text))).difference(seen):
                    seen[token] = now
            await asyncio.sleep(0.02)

    def pair_delays(self, since: float, until: float) -> dict[str, list[float]]:
        """Like Run.pair_delays: delays of inserts made in [since, until), by path."""
        grouped: dict[str, list[float]] = {
            "same_process": [],
            "same_editor": [],
            "across_editors": [],
        }
        for token, at in self.inserted_at.items():
            if not since <= at < until:
                continue
            author = token.split(".", 1)[0]
            for receiver, (editor, process) in self.placement.items():
                if receiver == author:
                    continue
                if process == self.placement[author][1]:
                    group = "same_process"
                elif editor == self.placement[author][0]:
                    group = "same_editor"
                else:
                    group = "across_editors"
                arrived = self.seen_at[receiver].get(token, until)
                grouped[group].append(max(0.0, min(arrived, until) - at))
        return grouped

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        clients, self.clients = self.clients, []
        for client in clients:
            await client.close()


async def resubscribed(run: Run, redis_url: str, expected: int, timeout: float = 5) -> float:
    """Wait until the editors' document subscriptions on Redis are back to `expected`.

    Without them fan-out would silently fall back to the heal loop for good (edits
    still converge, one heal interval late).
    """
    started = time.monotonic()
    found = -1
    while time.monotonic() - started < timeout:
        found = await group_subscriptions(redis_url)
        if found == expected:
            run.record("resubscribed_seconds", round(time.monotonic() - started, 3))
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"editors hold {found} document subscriptions on Redis, not {expected}, "
        f"{timeout}s after it came back: cross-process fan-out did not resume"
    )


async def test_redis_restart_mid_run_loses_nothing_and_converges_within_5s(
    editing_run: EditingRun, pg_database: PostgresDatabase, redis_server: RedisServer
) -> None:
    async with editing_run("redis-restart", pg_database.url) as cluster:
        run, instances = cluster.run, cluster.instances
        subscriptions = await group_subscriptions(redis_server.url)
        assert subscriptions >= 2, "the document should be served by several processes"
        run.figures["group_subscriptions"] = subscriptions

        due = run.checkpoint()
        down_at = time.monotonic()
        await asyncio.to_thread(redis_server.stop)
        run.figures["readyz_while_down"] = await assert_not_ready(instances, "redis")
        # Redis is transport only: without it the heal loop still converges everyone
        # from the log (DESIGN, promise 1), so Redis stays down until they have.
        await run.converge_after(down_at, due, what="Redis went down", record="while_down_seconds")
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))
        run.window("redis_down", down_at, time.monotonic())

        await asyncio.to_thread(redis_server.start)
        await recover(
            run,
            instances,
            time.monotonic(),
            what="Redis restarted",
            ready_after="restart",
            window="after_restart",
            also=lambda: resubscribed(run, redis_server.url, subscriptions),
        )
        assert run.disconnect_count() == 0, "a Redis restart should not close any client"
        await run.final_check(instances)


async def test_redis_unreachable_for_10s_loses_nothing_and_converges_within_5s(
    editing_run: EditingRun, pg_database: PostgresDatabase, redis_server: RedisServer
) -> None:
    assert redis_server.process is not None
    pid = redis_server.process.pid
    async with editing_run("redis-unreachable", pg_database.url) as cluster:
        run, instances = cluster.run, cluster.instances
        probes = ProcessProbes()
        try:
            await probes.place(instances, "redis-unreachable-probes")
            probes.start()
            await asyncio.sleep(1.0)
            subscriptions = await group_subscriptions(redis_server.url)
            assert subscriptions >= 5, "both documents should be served by several processes"
            run.figures["group_subscriptions"] = subscriptions

            due = run.checkpoint()
            stopped_at = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            try:
                # Publishing no longer holds commits: edits keep flowing, between
                # processes through the heal loop, within the promised bound (measured
                # while readiness is checked, which takes the 2 s Redis timeout).
                readiness, _ = await asyncio.gather(
                    assert_not_ready(instances, "redis"),
                    run.converge_after(
                        stopped_at,
                        due,
                        what="Redis stopped answering",
                        record="while_unreachable_seconds",
                    ),
                )
                run.figures["readyz_while_unreachable"] = readiness
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
            finally:
                os.kill(pid, signal.SIGCONT)
            back_at = time.monotonic()
            run.window("redis_unreachable", stopped_at, back_at)
            # Every insert made while Redis hung, from every writer to every other one:
            # the delay until it arrived (or, if it had not by SIGCONT, how long it had
            # waited).
            during = {
                "writers": run.pair_delays(stopped_at, back_at),
                "probes": probes.pair_delays(stopped_at, back_at),
            }
            run.figures["pair_propagation_while_unreachable"] = {
                who: {path: run.summarize(delays) for path, delays in paths.items()}
                for who, paths in during.items()
            }
            for who, paths in during.items():
                for path, delays in paths.items():
                    if who == "probes":  # placed for certain: every path is exercised
                        assert delays, f"no {path} pairs among the probes"
                    slowest = max(delays, default=0.0)
                    assert slowest <= CONVERGENCE_BOUND_SECONDS, (
                        f"while Redis hung, an insert took {slowest:.2f}s to reach a {who} "
                        f"peer ({path}): {run.summarize(delays)}"
                    )
            await recover(
                run,
                instances,
                back_at,
                what="Redis answering again",
                ready_after="SIGCONT",
                also=lambda: resubscribed(run, redis_server.url, subscriptions),
            )
            assert run.disconnect_count() == 0, "an unresponsive Redis should not close any client"
            assert not any(c.closed.is_set() for c in probes.clients), "a probe was closed"
            await probes.close()
            await run.final_check(instances)
        finally:
            await probes.close()
