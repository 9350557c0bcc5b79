"""Two editor instances, two workers each, sharing PostgreSQL and Redis: real processes."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.error
import urllib.request

import pytest
from pycrdt import Doc, Text

from tests.support.processes import EditorInstance, PostgresDatabase, RedisServer
from tests.support.yclient import YClient, clients_on_distinct_workers, wait_until


def start_cluster(
    editors: list[EditorInstance], pg: PostgresDatabase, redis: RedisServer, count: int = 2
) -> list[EditorInstance]:
    for index in range(count):
        instance = EditorInstance(f"editor-{index}", database_url=pg.url, redis_url=redis.url)
        editors.append(instance.start())
    return editors


def tokens(text: str) -> list[str]:
    return [token for token in text.split(";") if token]


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def test_clients_on_two_instances_and_four_workers_converge_with_every_edit_once(
    editors, pg_database, redis_server
):
    first, second = start_cluster(editors, pg_database, redis_server)
    clients = await clients_on_distinct_workers(f"{first.ws_url}/converge", 2)
    clients += await clients_on_distinct_workers(f"{second.ws_url}/converge", 2)
    assert len({client.instance for client in clients}) == 4

    rng = random.Random(7)
    for round_ in range(25):
        for index, client in enumerate(clients):
            position = rng.randint(0, len(str(client.text)))
            # Insert whole tokens at token boundaries so every token stays intact.
            boundaries = [0] + [i + 1 for i, ch in enumerate(str(client.text)) if ch == ";"]
            position = min(boundaries, key=lambda b: abs(b - position))
            client.insert(f"c{index}-{round_};", position)
        await asyncio.sleep(0.005)
    expected = sorted(f"c{index}-{round_};"[:-1] for index in range(4) for round_ in range(25))

    await wait_until(
        lambda: (
            len({str(c.text) for c in clients}) == 1 and len(tokens(str(clients[0].text))) == 100
        ),
        timeout=10,
        what="all four clients to converge",
    )
    assert sorted(tokens(str(clients[0].text))) == expected

    status, state = http("GET", f"{second.base_url}/api/docs/converge/state")
    stored = Doc()
    stored.apply_update(state)
    assert status == 200
    assert sorted(tokens(str(stored.get("text", type=Text)))) == expected
    for client in clients:
        await client.close()


async def test_update_seen_by_a_peer_survives_sigkill_of_the_instance(
    editors, pg_database, redis_server
):
    first, second = start_cluster(editors, pg_database, redis_server)
    writer = await YClient(f"{first.ws_url}/durable").connect()
    watcher = await YClient(f"{first.ws_url}/durable").connect()
    writer.insert("relayed then killed")
    await wait_until(lambda: str(watcher.text) == "relayed then killed", what="relay")
    first.kill()  # the master and both workers, at once, the moment the relay was seen

    late = await YClient(f"{second.ws_url}/durable").connect()
    assert str(late.text) == "relayed then killed"
    first.start()
    again = await YClient(f"{first.ws_url}/durable").connect()
    assert str(again.text) == "relayed then killed"
    for client in (late, again):
        await client.close()


async def test_clients_converge_within_five_seconds_after_redis_restarts(
    editors, pg_database, redis_server
):
    first, second = start_cluster(editors, pg_database, redis_server)
    alice = await YClient(f"{first.ws_url}/blip").connect()
    bob = await YClient(f"{second.ws_url}/blip").connect()
    alice.insert("before;")
    await wait_until(lambda: str(bob.text) == "before;", what="first relay")

    redis_server.stop()
    alice.insert("during;")
    bob.insert("while-down;")
    await asyncio.sleep(0.5)
    redis_server.start()
    alice.insert("after;")

    took = await wait_until(
        lambda: str(alice.text) == str(bob.text) and len(tokens(str(bob.text))) == 4,
        timeout=5,
        what="convergence after the Redis restart",
    )
    assert sorted(tokens(str(bob.text))) == ["after", "before", "during", "while-down"]
    assert took < 5
    for client in (alice, bob):
        await client.close()


async def test_late_joiner_on_the_other_instance_receives_all_content_and_presence(
    editors, pg_database, redis_server
):
    first, second = start_cluster(editors, pg_database, redis_server)
    writers = [await YClient(f"{first.ws_url}/late").connect() for _ in range(3)]
    for index, writer in enumerate(writers):
        for step in range(20):
            writer.insert(f"w{index}-{step};")
    await writers[0].set_presence({"user": {"name": "Ada"}})
    await wait_until(
        lambda: all(len(tokens(str(w.text))) == 60 for w in writers), what="writers converge"
    )

    late = await YClient(f"{second.ws_url}/late").connect()
    assert len(tokens(str(late.text))) == 60
    assert str(late.text) == str(writers[0].text)
    ada = writers[0].awareness.client_id
    await wait_until(lambda: ada in late.remote_presence(), what="presence of the writer")

    await writers[0].close()
    await wait_until(lambda: ada not in late.remote_presence(), what="presence removal")
    for client in (*writers[1:], late):
        await client.close()


async def test_http_api_lists_describes_serves_state_and_relays_posted_updates(
    editors, pg_database, redis_server
):
    first, second = start_cluster(editors, pg_database, redis_server)
    listener = await YClient(f"{second.ws_url}/via-http").connect()

    backend = Doc()
    backend_text = backend.get("text", type=Text)
    backend_text += "from a backend"
    status, body = http("POST", f"{first.base_url}/api/docs/via-http/updates", backend.get_update())
    assert status == 200, body
    assert json.loads(body)["changed"] is True
    await wait_until(lambda: str(listener.text) == "from a backend", what="posted update relayed")

    status, body = http("GET", f"{first.base_url}/api/docs")
    listed = {doc["id"]: doc for doc in json.loads(body)["documents"]}
    assert status == 200 and listed["via-http"]["size_bytes"] > 0
    status, body = http("GET", f"{first.base_url}/api/docs/via-http")
    assert status == 200 and json.loads(body)["id"] == "via-http"

    assert http("GET", f"{first.base_url}/api/docs/never-written")[0] == 404
    assert http("GET", f"{first.base_url}/api/docs/never-written/state")[0] == 404
    status, body = http("GET", f"{first.base_url}/api/docs/bad%20id")
    assert status == 400 and "message" in json.loads(body)
    status, body = http("POST", f"{first.base_url}/api/docs/via-http/updates", b"\x01\x02garbage")
    assert status == 400 and json.loads(body)["error"] == "BadUpdate"
    status, body = http(
        "POST", f"{first.base_url}/api/docs/via-http/updates", b"x" * (3 * 1024 * 1024)
    )
    assert status == 413 and json.loads(body)["error"] == "TooLarge"
    assert str(listener.text) == "from a backend"
    await listener.close()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_answer_when_database_and_redis_are_up(
    editors, pg_database, redis_server, path
):
    (instance,) = start_cluster(editors, pg_database, redis_server, count=1)
    status, body = http("GET", instance.base_url + path)
    assert status == 200, body


async def test_readiness_fails_while_redis_is_down(editors, pg_database, redis_server):
    (instance,) = start_cluster(editors, pg_database, redis_server, count=1)
    redis_server.stop()
    status, body = http("GET", f"{instance.base_url}/readyz")
    assert status == 503 and json.loads(body)["checks"]["redis"] == "unavailable"
    assert http("GET", f"{instance.base_url}/healthz")[0] == 200
    redis_server.start()


async def test_sigterm_closes_sockets_with_1012_and_keeps_every_update(
    editors, pg_database, redis_server
):
    (instance,) = start_cluster(editors, pg_database, redis_server, count=1)
    client = await YClient(f"{instance.ws_url}/restart").connect()
    client.insert("written just before the restart")
    await client.flushed()
    await asyncio.to_thread(instance.stop)
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.close_code == 1012

    instance.start()
    late = await YClient(f"{instance.ws_url}/restart").connect()
    assert str(late.text) == "written just before the restart"
    await late.close()


async def test_document_detail_counts_the_people_present_on_every_instance(
    editors, pg_database, redis_server
):
    first, second = start_cluster(editors, pg_database, redis_server)
    here = await YClient(f"{first.ws_url}/people").connect()
    there = await YClient(f"{second.ws_url}/people").connect()
    here.insert("x")
    await here.set_presence({"user": {"name": "A"}})
    await there.set_presence({"user": {"name": "B"}})

    def people() -> int:
        status, body = http("GET", f"{first.base_url}/api/docs/people")
        return json.loads(body)["people"] if status == 200 else -1

    await wait_until(lambda: people() == 2, what="both people counted")
    await there.close()
    await wait_until(lambda: people() == 1, what="the one who left no longer counted")
    await here.close()
