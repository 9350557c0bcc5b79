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
    get,
    idle_report,
    start_editors,
    wait_for_readiness,
    wait_gateway_sees,
)
from tests.faults.outage import (
    assert_not_ready,
    assert_nothing_relayed,
    assert_nothing_relayed_until,
    inserted_since,
    pending_updates,
    recover,
    relay_cut,
)
from tests.faults.scenario import EditingRun, close_codes
from tests.support.pgcluster import PrivatePostgres
from tests.support.yclient import YClient, clients_on_distinct_workers, wait_until

OUTAGE_SECONDS = 10.0


async def test_postgres_stopped_for_10s_relays_nothing_undurable_then_stores_everything(
    editing_run: EditingRun, private_postgres: PrivatePostgres
) -> None:
    async with editing_run("postgres-outage", private_postgres.url) as cluster:
        run, instances = cluster.run, cluster.instances
        await asyncio.to_thread(private_postgres.stop)
        stopped_at = time.monotonic()
        assert not private_postgres.accepts_connections()
        # From here on nothing new can become durable, so nothing new may be relayed.
        cut = relay_cut(run)
        run.figures["readyz_while_down"] = await assert_not_ready(instances, "database")

        samples = await assert_nothing_relayed_until(run, cut, stopped_at + OUTAGE_SECONDS)
        run.figures["gateway_readyz_during_outage"] = (
            await get(f"{cluster.gateway.base_url}/readyz")
        ).json()
        assert_nothing_relayed(run, cut)
        written = inserted_since(run, cut)
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
        await recover(run, instances, back_at, what="PostgreSQL restarted", ready_after="restart")
        await run.final_check(instances)


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


async def test_sigkill_of_an_editor_during_a_postgres_outage_loses_no_insert(
    editing_run: EditingRun, private_postgres: PrivatePostgres
) -> None:
    """An editor dies (SIGKILL) holding updates it accepted while the database was down.

    Those updates were never durable, so they must never have been relayed to anyone
    (DESIGN, promise 2): the only copies are in their authors' clients. Once the
    database and the editor are back, the clients reconnect and their SyncStep2 hands
    the server everything it lacks, those updates included: everyone converges and
    every insert ends up stored exactly once.
    """
    async with editing_run("postgres-outage-sigkill", private_postgres.url) as cluster:
        run, instances = cluster.run, cluster.instances
        victim = run.busiest(instances)
        survivor = next(instance for instance in instances if instance is not victim)
        on_victim = run.on(victim.base_url)
        assert on_victim, "no writer on the editor to kill"

        await asyncio.to_thread(private_postgres.stop)
        stopped_at = time.monotonic()
        cut = relay_cut(run)
        await asyncio.sleep(3.0)  # the victim accepts updates it cannot make durable
        pending = await pending_updates(victim)
        assert_nothing_relayed(run, cut)
        # Inserts the victim accepted (its writers were online on it) and holds undurable.
        held_by_victim = {
            token
            for writer in on_victim
            for token in writer.inserted[cut[writer.name] :]
            if (placed := writer.inserted_on.get(token)) is not None
            and placed[0] == victim.base_url
        }
        disconnects = run.disconnect_count()
        killed_at = time.monotonic()
        victim.kill()  # master and workers at once, with their journals

        # The rest of the outage: the victim's writers cannot get back in (the survivor
        # cannot confirm a sync), everyone keeps typing, still nothing undurable flows.
        await assert_nothing_relayed_until(run, cut, stopped_at + OUTAGE_SECONDS)
        assert run.disconnect_count() > disconnects, "the kill closed no writer"
        run.figures.update(
            writers_on_victim=len(on_victim),
            pending_on_victim_before_kill=pending,
            inserts_held_undurable_by_victim=len(held_by_victim),
            killed_after_seconds=round(killed_at - stopped_at, 3),
            inserted_during_outage=sum(inserted_since(run, cut).values()),
            close_codes_seen=close_codes(run),
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
        await wait_gateway_sees(cluster.gateway, 2)
        await asyncio.sleep(1.0)
        run.window("after_outage", postgres_back_at, time.monotonic())
        await run.final_check(instances)
