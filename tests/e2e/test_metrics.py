"""Metrics of a real editor instance (two workers) and the gateway, scraped as Prometheus would.

One instance's /metrics must report the totals of all its workers (prometheus-client
multiprocess mode), whichever worker answers the scrape; the names the dashboards and
alert rules use must exist; and a real Prometheus server must be able to scrape both.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import (
    EditorInstance,
    GatewayInstance,
    PostgresDatabase,
    RedisServer,
    free_port,
    wait_for_port,
)
from tests.support.yclient import YClient, clients_on_distinct_workers, wait_until

# Small and distinctive, so that the pod-wide limit (workers x this) is unmistakable.
PER_WORKER_LIMIT = 37
WORKERS = 2
BAD_FRAME = b"\x00\x02\x05\x01"  # a sync update announcing 5 bytes and carrying 1
INVALID_DOC_ID = "not!valid"


# Scrapes --------------------------------------------------------------------------------


@dataclass
class Scrape:
    """One exposition: every sample by name and labels, and every name it mentions."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of `name` whose labels include `labels`; None if none."""
        wanted = set(labels.items())
        found = [
            value
            for (sample, sample_labels), value in self.samples.items()
            if sample == name and wanted <= sample_labels
        ]
        return sum(found) if found else None

    def number(self, name: str, **labels: str) -> float:
        """Like value(), but a missing sample fails the test with its name."""
        value = self.value(name, **labels)
        assert value is not None, f"no sample {name}{labels or ''} in the scrape"
        return value


# The sample names a declared family exports, by type (a counter family "x" declares x_total).
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
    "info": ("_info",),
}


def parse(text: str) -> Scrape:
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        # A declared family counts even before its first labelled child has a sample.
        scrape.names.add(family.name)
        scrape.names.update(family.name + end for end in SAMPLE_SUFFIXES.get(family.type, ()))
        for sample in family.samples:
            scrape.names.add(sample.name)
            scrape.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return scrape


async def scrape(base_url: str) -> Scrape:
    # A new connection per scrape, so that any worker of the instance may accept it.
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def scrape_until(base_url: str, check, *, timeout: float = 10, what: str) -> Scrape:
    """Scrape until `check(scrape)` holds; fail with the last values after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await scrape(base_url)
        if check(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


# The samples the traffic moves; once it stops, every scrape must agree on them.
POD_TOTALS = [
    ("collab_connections", {}),
    ("collab_rooms", {}),
    ("collab_connections_limit", {}),
    ("collab_frames_received_total", {"kind": "update"}),
    ("collab_frames_received_total", {"kind": "awareness"}),
    ("collab_frames_received_total", {"kind": "invalid"}),
    ("collab_frames_sent_total", {"kind": "update"}),
    ("collab_frames_sent_total", {"kind": "awareness"}),
    ("collab_update_bytes_total", {}),
    ("collab_fanout_seconds_count", {}),
    ("collab_relay_seconds_count", {}),
    ("collab_db_append_seconds_count", {}),
    ("collab_refused_frames_total", {"reason": "bad_frame"}),
    ("collab_refused_connections_total", {"reason": "invalid_document"}),
]


def pod_totals(result: Scrape) -> dict[str, float | None]:
    return {f"{name}{labels or ''}": result.value(name, **labels) for name, labels in POD_TOTALS}


# Processes and traffic ------------------------------------------------------------------


def start_stack(
    editors: list[EditorInstance],
    gateways: list[GatewayInstance],
    pg: PostgresDatabase,
    redis: RedisServer,
) -> tuple[EditorInstance, GatewayInstance]:
    editor = EditorInstance(
        "metrics-editor",
        database_url=pg.url,
        redis_url=redis.url,
        workers=WORKERS,
        extra_env={"COLLAB_MAX_CONNECTIONS_PER_WORKER": str(PER_WORKER_LIMIT)},
    )
    editors.append(editor)
    editor.start()
    gateway = GatewayInstance("metrics-gateway", upstreams=[editor.base_url])
    gateways.append(gateway)
    gateway.start()
    return editor, gateway


async def close_all(clients: Iterable[YClient]) -> None:
    for client in clients:
        await client.close()


async def edit_and_converge(clients: list[YClient], doc_of: dict[YClient, str]) -> None:
    """Every client inserts and publishes presence; wait until each document converged."""
    for index, client in enumerate(clients):
        client.insert(f"[{index}]")
        await client.set_presence({"user": f"user-{index}"})
    for client in clients:
        await client.flushed()
    for doc_id in set(doc_of.values()):
        peers = [client for client in clients if doc_of[client] == doc_id]
        marks = [f"[{clients.index(client)}]" for client in peers]
        await wait_until(
            lambda peers=peers, marks=marks: all(
                all(mark in str(peer.text) for mark in marks) for peer in peers
            ),
            what=f"the clients of {doc_id} to converge",
        )
        await wait_until(
            lambda peers=peers: all(
                len(peer.remote_presence()) == len(peers) - 1 for peer in peers
            ),
            what=f"the clients of {doc_id} to see each other's presence",
        )


async def closed_with(client: YClient, timeout: float = 5) -> int | None:
    await asyncio.wait_for(client.closed.wait(), timeout)
    return client.close_code


async def refused_traffic(editor: EditorInstance, gateway: GatewayInstance) -> None:
    """One malformed frame through the gateway, one invalid document id at each service."""
    bad = await YClient(f"{gateway.ws_url}/broken").connect()
    await bad.send_raw(BAD_FRAME)
    assert await closed_with(bad) == 4400
    await bad.close()
    invalid = await YClient(f"{editor.ws_url}/{INVALID_DOC_ID}").connect(wait_synced=False)
    assert await closed_with(invalid) == 4400
    await invalid.close()
    # The gateway checks ids itself: such an id never reaches an editor through it.
    refused = await YClient(f"{gateway.ws_url}/{INVALID_DOC_ID}").connect(wait_synced=False)
    assert await closed_with(refused) == 4400
    await refused.close()


class PrometheusServer:
    """The Prometheus server on a free loopback port, scraping each target every second."""

    def __init__(
        self, binary: str, workdir: Path, targets: dict[str, EditorInstance | GatewayInstance]
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.targets = targets
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{target.port}']}}]\n"
            for job, target in self.targets.items()
        )
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n{jobs}"
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--query.lookback-delta=5s",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None

    async def query(self, expression: str) -> list[dict]:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(
                f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expression}
            )
        body = response.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    async def until_answered(self, expression: str, timeout: float = 15) -> list[dict]:
        """Query until the answer is not empty (the first scrapes come within seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            assert self.process.poll() is None, f"prometheus exited:\n{self.log_path.read_text()}"
            result = await self.query(expression)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"prometheus never answered {expression!r} within {timeout}s; "
                    f"log:\n{self.log_path.read_text()}"
                )
            await asyncio.sleep(0.25)


# Tests ----------------------------------------------------------------------------------


async def test_one_scrape_reports_the_traffic_of_both_workers_and_of_the_gateway(
    editors, gateways, pg_database, redis_server
):
    editor, gateway = start_stack(editors, gateways, pg_database, redis_server)
    direct = await clients_on_distinct_workers(f"{editor.ws_url}/shared", WORKERS)
    relayed = [
        await YClient(f"{gateway.ws_url}/{doc_id}").connect()
        for doc_id in ("shared", "notes", "notes", "todo")
    ]
    clients = direct + relayed
    doc_of = dict(zip(clients, ["shared"] * 3 + ["notes"] * 2 + ["todo"], strict=True))
    try:
        await edit_and_converge(clients, doc_of)
        await refused_traffic(editor, gateway)

        # Every open client, on either worker, in the pod's gauge (closed ones gone); then
        # wait until two scrapes in a row agree, so that nothing is still in flight.
        history: list[dict[str, float | None]] = []

        def settled(result: Scrape) -> bool:
            totals = pod_totals(result)
            unchanged = bool(history) and history[-1] == totals
            history.append(totals)
            return (
                unchanged
                and result.value("collab_connections") == len(clients)
                and (result.value("collab_process_resident_memory_bytes") or 0) > 0
            )

        try:
            await scrape_until(
                editor.base_url,
                settled,
                what=f"collab_connections == {len(clients)} (both workers) in two equal scrapes",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}; the last scrapes: {history[-2:]}") from None
        # Any worker may answer a scrape: every one must report the same pod totals.
        scrapes = [await scrape(editor.base_url) for _ in range(6)]
        expected = pod_totals(scrapes[0])
        for index, later in enumerate(scrapes[1:], start=2):
            assert pod_totals(later) == expected, f"scrape {index} disagrees with scrape 1"
        pod = scrapes[0]

        assert pod.number("collab_connections") == len(clients) == 6
        assert pod.number("collab_rooms") >= 4  # "shared" on both workers, "notes", "todo"
        assert pod.number("collab_connections_limit") == WORKERS * PER_WORKER_LIMIT
        assert pod.number("collab_process_resident_memory_bytes") > 0
        assert pod.number("collab_frames_received_total", kind="update") >= len(clients)
        assert pod.number("collab_frames_received_total", kind="awareness") >= len(clients)
        assert pod.number("collab_frames_received_total", kind="invalid") == 1
        assert pod.number("collab_frames_sent_total", kind="update") > 0
        assert pod.number("collab_frames_sent_total", kind="awareness") > 0
        assert pod.number("collab_update_bytes_total") > 0
        assert pod.number("collab_fanout_seconds_count") >= len(clients)
        assert pod.number("collab_relay_seconds_count") > 0, "no cross-worker relay observed"
        assert pod.number("collab_db_append_seconds_count") > 0
        assert pod.number("collab_refused_frames_total", reason="bad_frame") == 1
        assert pod.number("collab_refused_connections_total", reason="invalid_document") == 1

        front = await scrape_until(
            gateway.base_url,
            lambda s: s.value("collab_gateway_open_connections") == len(relayed),
            what=f"collab_gateway_open_connections == {len(relayed)}",
        )
        assert front.number("collab_gateway_frames_total", direction="to_upstream") > 0
        assert front.number("collab_gateway_frames_total", direction="to_client") > 0
        assert front.number("collab_gateway_connections_total") == len(relayed) + 1
        assert front.number("collab_gateway_refusals_total", reason="bad_path") == 1
        assert front.number("collab_gateway_open_connections") == len(relayed)
    finally:
        await close_all(clients)

    drained = await scrape_until(
        editor.base_url,
        lambda s: s.value("collab_connections") == 0,
        what="collab_connections to return to 0 after every client closed",
    )
    assert drained.number("collab_connections_limit") == WORKERS * PER_WORKER_LIMIT


async def test_the_pod_reports_its_connection_limit_before_any_websocket(
    editors, gateways, pg_database, redis_server
):
    editor, _ = start_stack(editors, gateways, pg_database, redis_server)
    await scrape_until(
        editor.base_url,
        lambda s: s.value("collab_connections_limit") == WORKERS * PER_WORKER_LIMIT,
        timeout=3,
        what=f"collab_connections_limit == {WORKERS * PER_WORKER_LIMIT} on a fresh instance",
    )


async def exported_after_traffic(editors, gateways, pg_database, redis_server) -> set[str]:
    """Every name the editor and the gateway export after edits, presence and refusals."""
    editor, gateway = start_stack(editors, gateways, pg_database, redis_server)
    clients = await clients_on_distinct_workers(f"{editor.ws_url}/shared", WORKERS)
    clients.append(await YClient(f"{gateway.ws_url}/shared").connect())
    try:
        await edit_and_converge(clients, dict.fromkeys(clients, "shared"))
        await refused_traffic(editor, gateway)
        pod = await scrape_until(
            editor.base_url,
            lambda s: (s.value("collab_process_resident_memory_bytes") or 0) > 0,
            what="a resident memory sample",
        )
        front = await scrape(gateway.base_url)
    finally:
        await close_all(clients)
    return pod.names | front.names


# Labelled editor counters that get their first series only with their first failure: in
# multiprocess mode a family without a series is not in the exposition at all.
ABSENT_UNTIL_FIRST_FAILURE = {
    "collab_auth_failures",
    "collab_db_failures",
    "collab_publish_failures",
}


async def test_every_metric_the_dashboards_and_rules_use_is_exported(
    editors, gateways, pg_database, redis_server
):
    from tests.monitoring.names import metric_names_in_monitoring

    used = set(metric_names_in_monitoring())
    assert len(used) > 10, f"the dashboard and the rules read almost no metric: {used}"
    exported = await exported_after_traffic(editors, gateways, pg_database, redis_server)
    missing = sorted(used - exported - ABSENT_UNTIL_FIRST_FAILURE)
    assert not missing, (
        "read by deploy/monitoring but exported by neither the editor nor the gateway "
        f"after real traffic: {', '.join(missing)}"
    )


async def test_failure_counters_the_monitoring_reads_are_exported_before_any_failure(
    editors, gateways, pg_database, redis_server
):
    from tests.monitoring.names import metric_names_in_monitoring

    used = set(metric_names_in_monitoring()) & ABSENT_UNTIL_FIRST_FAILURE
    exported = await exported_after_traffic(editors, gateways, pg_database, redis_server)
    assert not sorted(used - exported), f"not exported before a failure: {sorted(used - exported)}"


async def test_a_prometheus_server_scrapes_the_editor_and_the_gateway(
    editors, gateways, pg_database, redis_server, tmp_path: Path
):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the Prometheus server (Debian package prometheus) is missing: run `make install`"
        )
    editor, gateway = start_stack(editors, gateways, pg_database, redis_server)
    server = PrometheusServer(
        binary, tmp_path, {"collab-editor": editor, "collab-gateway": gateway}
    )
    clients: list[YClient] = []
    try:
        server.start()
        clients = await clients_on_distinct_workers(f"{editor.ws_url}/scraped", WORKERS)
        clients.append(await YClient(f"{gateway.ws_url}/scraped").connect())
        await edit_and_converge(clients, dict.fromkeys(clients, "scraped"))

        relayed = await server.until_answered("sum(collab_relay_seconds_count) > 0")
        assert float(relayed[0]["value"][1]) > 0
        received = await server.until_answered("sum(collab_frames_received_total) > 0")
        assert received[0]["metric"] == {}
        for job in ("collab-editor", "collab-gateway"):
            (up,) = await server.until_answered(f'up{{job="{job}"}} == 1')
            assert up["metric"]["instance"] == f"127.0.0.1:{server.targets[job].port}"
        await server.until_answered('collab_connections{job="collab-editor"} == 3')
        await server.until_answered('collab_gateway_connections_total{job="collab-gateway"} == 1')
    finally:
        await close_all(clients)
        server.stop()
