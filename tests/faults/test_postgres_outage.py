"""PostgreSQL, the only durable copy, is stopped for 10 s while people type.

The editors use a private PostgreSQL server (tests/support/pgcluster.py) that the test
really stops (`pg_ctl stop -m fast`: every backend is terminated, new connections are
refused) and starts again on the same port; the shared server on 5432 is never touched.

What the service promises (journal.py, "Durable before relayed"): an update that is
not in the log is relayed to nobody, so during the outage writers keep editing their
own copies and see nobody else's new edits; the journal holds the accepted updates and
retries until the database is back; then everything is stored and everyone converges
within 5 s. Readiness fails (503, naming the database) while it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.faults.harness import (
    CONVERGENCE_BOUND_SECONDS,
    assert_idle,
    begin_run,
    get,
    idle_report,
    readyz,
    start_editors,
    start_gateway,
    wait_for_readiness,
    wait_gateway_sees,
)
from tests.support.processes import EditorInstance
from tests.support.yclient import YClient, clients_on_distinct_workers, wait_until

OUTAGE_SECONDS = 10.0


def relayed_during_outage(run, cut: dict[str, int]) -> dict[str, list[str]]:
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


async def test_postgres_stopped_for_10s_relays_nothing_undurable_then_stores_everything(
    editors, gateways, private_postgres, redis_server
):
    instances = await start_editors(editors, private_postgres.url, redis_server.url)
    gateway = await start_gateway(gateways, instances)
    run = await begin_run("postgres-outage", "postgres-outage", instances, [gateway])
    try:
        await asyncio.to_thread(private_postgres.stop)
        stopped_at = time.monotonic()
        assert not private_postgres.accepts_connections()
        # From here on nothing new can become durable, so nothing new may be relayed.
        cut = {writer.name: len(writer.inserted) for writer in run.writers}

        answers = await asyncio.gather(*(readyz(instance) for instance in instances))
        for status, body in answers:
            assert status == 503, body
            assert body["checks"] == {"database": "unavailable", "redis": "ok"}, body
        run.figures["readyz_while_down"] = [body for _, body in answers]

        samples = 0
        while time.monotonic() - stopped_at < OUTAGE_SECONDS:
            leaked = relayed_during_outage(run, cut)
            assert not leaked, f"updates relayed while the database was down: {leaked}"
            samples += 1
            await asyncio.sleep(0.2)
        run.figures["gateway_readyz_during_outage"] = (
            await get(f"{gateway.base_url}/readyz")
        ).json()
        leaked = relayed_during_outage(run, cut)
        assert not leaked, f"updates relayed while the database was down: {leaked}"
        written = {w.name: len(w.inserted) - cut[w.name] for w in run.writers}
        assert all(count > 0 for count in written.values()), f"writers stalled: {written}"
        assert all(w.online for w in run.writers), "writers were disconnected by the outage"
        run.figures.update(
            outage_seconds=round(time.monotonic() - stopped_at, 3),
            no_relay_checks_during_outage=samples,
            inserted_during_outage=sum(written.values()),
            disconnects_during_outage=run.disconnect_count(),
        )

        await asyncio.to_thread(private_postgres.start)
        back_at = time.monotonic()
        run.window("postgres_down", stopped_at, back_at)
        took = await run.converge_after(back_at, run.checkpoint(), what="PostgreSQL restarted")
        assert took < CONVERGENCE_BOUND_SECONDS
        for instance in instances:
            run.record(
                "ready_again_seconds",
                round(await wait_for_readiness(instance, 200, timeout=5, what="restart"), 3),
            )
        await asyncio.sleep(1.0)
        run.window("after_outage", back_at, time.monotonic())
        await run.final_check(instances)
    finally:
        await run.close()
    await assert_idle(instances)


def state_of(client: YClient) -> dict[str, object]:
    return {
        "closed": client.closed.is_set(),
        "code": client.close_code,
        "synced": client.synced.is_set(),
    }


async def test_a_client_joining_during_a_postgres_outage_is_told_to_retry_and_nothing_leaks(
    editors, private_postgres, redis_server
):
    """A client whose socket dropped comes back while the database is down.

    Through the gateway it is refused (no editor is ready); but a gateway's view of
    readiness lags by up to a probe interval plus the readiness timeout, so a join can
    reach an editor whose room is loaded. The editor must then either refuse it with
    1013 (try again later, as for a document it cannot load) or hold the sync until
    the database is back; and once every client has left, it must hold no connection
    and no room.
    """
    (instance,) = await start_editors(editors, private_postgres.url, redis_server.url, count=1)
    # Both workers hold the room, so the join meets a loaded room whichever it reaches.
    holders = await clients_on_distinct_workers(f"{instance.ws_url}/rejoin", 2)
    holders[0].insert("before;")
    await wait_until(lambda: all(str(h.text) == "before;" for h in holders), what="relay")

    await asyncio.to_thread(private_postgres.stop)
    holders[1].insert("during;")  # accepted, held by the journal, relayed to nobody
    joiner = YClient(f"{instance.ws_url}/rejoin", name="joiner")
    await joiner.connect(wait_synced=False)
    await asyncio.sleep(3)
    during = state_of(joiner)
    assert "during" not in str(joiner.text) and "during" not in str(holders[0].text)

    await asyncio.to_thread(private_postgres.start)
    if not joiner.closed.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(joiner.synced.wait(), CONVERGENCE_BOUND_SECONDS)
    after = state_of(joiner)
    await wait_until(
        lambda: all("during;" in str(h.text) for h in holders),
        timeout=CONVERGENCE_BOUND_SECONDS,
        what="the held update relayed once the database is back",
    )
    for client in (*holders, joiner):
        await client.close()
    leaked = await idle_report([instance])

    refused_to_retry = during["closed"] and during["code"] == 1013
    served_later = not after["closed"] and after["synced"]
    assert (refused_to_retry or served_later) and not leaked, (
        f"a join during the outage: during={during}, after the database returned={after} "
        f"(expected a 1013 close or a sync once the database is back); "
        f"after every client left the editor still holds {leaked or 'nothing'}"
    )


async def pending_updates(instance: EditorInstance) -> float:
    """collab_pending_updates of an editor instance (summed over its workers)."""
    response = await get(f"{instance.base_url}/metrics")
    for line in response.text.splitlines():
        if line.startswith("collab_pending_updates "):
            return float(line.split()[1])
    raise AssertionError("collab_pending_updates is missing from /metrics")


async def test_sigkill_of_an_editor_during_a_postgres_outage_loses_no_insert(
    editors, gateways, private_postgres, redis_server
):
    """An editor dies (SIGKILL) holding updates it accepted while the database was down.

    Those updates were never durable, so they must never have been relayed to anyone
    (DESIGN, promise 2): the only copies are in their authors' clients. Once the
    database and the editor are back, the clients reconnect and their SyncStep2 hands
    the server everything it lacks, those updates included: everyone converges and
    every insert ends up stored exactly once.
    """
    instances = await start_editors(editors, private_postgres.url, redis_server.url)
    gateway = await start_gateway(gateways, instances)
    name = "postgres-outage-sigkill"
    run = await begin_run(name, name, instances, [gateway])
    try:
        victim = run.busiest(instances)
        survivor = next(instance for instance in instances if instance is not victim)
        on_victim = run.on(victim.base_url)
        assert on_victim, "no writer on the editor to kill"

        await asyncio.to_thread(private_postgres.stop)
        stopped_at = time.monotonic()
        cut = {writer.name: len(writer.inserted) for writer in run.writers}
        await asyncio.sleep(3.0)  # the victim accepts updates it cannot make durable
        pending = await pending_updates(victim)
        leaked = relayed_during_outage(run, cut)
        assert not leaked, f"updates relayed while the database was down: {leaked}"
        # Inserts the victim accepted (its writers were online on it) and holds undurable.
        held_by_victim = {
            token
            for writer in on_victim
            for token in writer.inserted[cut[writer.name] :]
            if writer.inserted_on.get(token) is not None
            and writer.inserted_on[token][0] == victim.base_url  # type: ignore[index]
        }
        disconnects = run.disconnect_count()
        killed_at = time.monotonic()
        victim.kill()  # master and workers at once, with their journals

        # The rest of the outage: the victim's writers cannot get back in (the survivor
        # cannot confirm a sync), everyone keeps typing, still nothing undurable flows.
        while time.monotonic() - stopped_at < OUTAGE_SECONDS:
            leaked = relayed_during_outage(run, cut)
            assert not leaked, f"updates relayed while the database was down: {leaked}"
            await asyncio.sleep(0.2)
        assert run.disconnect_count() > disconnects, "the kill closed no writer"
        run.figures.update(
            writers_on_victim=len(on_victim),
            pending_on_victim_before_kill=pending,
            inserts_held_undurable_by_victim=len(held_by_victim),
            killed_after_seconds=round(killed_at - stopped_at, 3),
            inserted_during_outage=sum(len(w.inserted) - cut[w.name] for w in run.writers),
            close_codes_seen=sorted({d.code for w in run.writers for d in w.disconnects}, key=str),
        )
        assert pending > 0 and held_by_victim, "the victim held nothing undurable when killed"

        await asyncio.to_thread(private_postgres.start)
        postgres_back_at = time.monotonic()
        await asyncio.to_thread(victim.start, 60)
        editor_back_at = time.monotonic()
        run.figures["editor_restart_seconds"] = round(editor_back_at - postgres_back_at, 3)
        run.window("postgres_down", stopped_at, postgres_back_at)
        due = run.checkpoint()
        took = await run.converge_after(
            editor_back_at, due, what="PostgreSQL and the killed editor returned"
        )
        assert took < CONVERGENCE_BOUND_SECONDS
        since_postgres = time.monotonic() - postgres_back_at
        run.record("convergence_after_postgres_seconds", round(since_postgres, 3))
        for instance in (survivor, victim):
            await wait_for_readiness(instance, 200, timeout=10, what="restart")
        await wait_gateway_sees(gateway, 2)
        await asyncio.sleep(1.0)
        run.window("after_outage", postgres_back_at, time.monotonic())
        await run.final_check(instances)
    finally:
        await run.close()
    await assert_idle(instances)
