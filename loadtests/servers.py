"""The servers under test, each behind one small interface: `Target`.

- `OursSingle`: one editor instance (gunicorn, one uvicorn worker by default, no Redis)
  on a fresh database; clients connect to it directly.
- `OursCrossPod`: two editor instances (one worker each) sharing a private Redis and the
  database, with the gateway in front; clients connect through the gateway.
- `Reference`: the reference server, `@y/websocket-server` from npm (Node, documents in
  memory, no persistence), started from `node_modules/` as a subprocess.

Every target is started pinned to the server CPUs with `taskset` when asked, and exposes
CPU probes (`ProcessTreeCpu`) and the resident memory of its process trees, so that both
are measured the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Protocol

from loadtests.harness import (
    DatabaseKind,
    ProcessTreeCpu,
    fetch_document_text,
    fresh_database,
    pin_process_tree,
    postgres_backends,
    start_editor,
    start_gateway,
    tree_rss_bytes,
)
from tests.support.processes import ARTIFACTS, ROOT, RedisServer, free_port, wait_for_port

# The `late` scenario sends a 20,000-insert history from one client as fast as it can,
# and the reference server limits nothing: the editor's per-connection message rate
# (200/s, burst 400 by default; 4429 beyond) must not cut a load short.
EDITOR_UNTHROTTLED = {"COLLAB_RATE_PER_SECOND": "1000000", "COLLAB_RATE_BURST": "1000000"}

REFERENCE_PACKAGE = "@y/websocket-server"
REFERENCE_DIR = ROOT / "node_modules" / "@y" / "websocket-server"
REFERENCE_SCRIPT = REFERENCE_DIR / "src" / "server.js"  # the package's bin, y-websocket-server


class Target(Protocol):
    """A running server under test, as the scenarios see it."""

    name: str  # "ours" or "reference"
    topology: str  # one line: what runs, for the report

    def ws_url(self, doc_id: str) -> str:
        """The WebSocket URL of one document."""

    def probes(self) -> dict[str, ProcessTreeCpu]:
        """CPU probes: one per server process tree, and "postgres" when there is one."""

    def server_probes(self) -> tuple[str, ...]:
        """The probes whose sum is "the server" (the database is reported apart)."""

    def rss_bytes(self) -> int:
        """Resident memory of every server process tree, summed (database excluded)."""

    def stored_text(self, doc_id: str) -> str | None:
        """The server's stored copy of a document's text, or None if it stores nothing."""


# --------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------


class OursSingle:
    """One editor instance, clients straight to it."""

    name = "ours"

    def __init__(
        self, database_url: str, database: DatabaseKind, *, cpus: str | None, max_connections: int
    ) -> None:
        self.database_url = database_url
        self.database = database
        self.editor = start_editor(
            "load-editor",
            database_url=database_url,
            cpus=cpus,
            workers=1,
            # The production cap (5000 per worker) must not cut a large idle scenario short.
            extra_env={
                **EDITOR_UNTHROTTLED,
                "COLLAB_MAX_CONNECTIONS_PER_WORKER": str(max(5000, max_connections)),
            },
        )
        self.topology = f"1 editor instance, 1 worker, no Redis, {database}; direct"

    def ws_url(self, doc_id: str) -> str:
        return f"{self.editor.ws_url}/{doc_id}"

    def probes(self) -> dict[str, ProcessTreeCpu]:
        assert self.editor.process is not None
        probes = {"editor": ProcessTreeCpu.of_pid(self.editor.process.pid)}
        probes.update(_postgres_probe(self.database, self.database_url))
        return probes

    def server_probes(self) -> tuple[str, ...]:
        return ("editor",)

    def rss_bytes(self) -> int:
        assert self.editor.process is not None
        return tree_rss_bytes([self.editor.process.pid])

    def stored_text(self, doc_id: str) -> str | None:
        return fetch_document_text(self.editor.base_url, doc_id)

    def stop(self) -> None:
        self.editor.stop()


class OursCrossPod:
    """Two editor instances sharing Redis and the database, behind one gateway."""

    name = "ours"

    def __init__(
        self,
        database_url: str,
        database: DatabaseKind,
        *,
        cpus: str | None,
        max_connections: int,
        max_rate: int,
    ) -> None:
        self.database_url = database_url
        self.database = database
        self.redis = RedisServer().start()
        self.editors = []
        self.gateway = None
        try:
            assert self.redis.process is not None
            if cpus:
                pin_process_tree(self.redis.process.pid, cpus)
            for label in ("a", "b"):
                self.editors.append(
                    start_editor(
                        f"load-pod-{label}",
                        database_url=database_url,
                        cpus=cpus,
                        workers=1,
                        redis_url=self.redis.url,
                        extra_env=EDITOR_UNTHROTTLED,
                    )
                )
            self.gateway = start_gateway(
                "load-pod-gateway",
                upstreams=[editor.base_url for editor in self.editors],
                cpus=cpus,
                # The production limits would refuse a load test from one address.
                extra_env={
                    "GATEWAY_MAX_CONNECTIONS_PER_IP": str(max_connections),
                    "GATEWAY_RATE_PER_SECOND": str(max_rate),
                    "GATEWAY_RATE_BURST": str(2 * max_rate),
                },
            )
        except BaseException:
            self.stop()
            raise
        self.topology = (
            f"2 editor instances (1 worker each) + Redis + gateway, {database}; via the gateway"
        )

    def ws_url(self, doc_id: str) -> str:
        assert self.gateway is not None
        return f"{self.gateway.ws_url}/{doc_id}"

    def editor_ws_url(self, index: int, doc_id: str) -> str:
        """A document's URL on one editor, around the gateway."""
        return f"{self.editors[index].ws_url}/{doc_id}"

    def probes(self) -> dict[str, ProcessTreeCpu]:
        assert self.gateway is not None and self.gateway.process is not None
        assert self.redis.process is not None
        probes = {}
        for label, editor in zip("ab", self.editors, strict=True):
            assert editor.process is not None
            probes[f"editor-{label}"] = ProcessTreeCpu.of_pid(editor.process.pid)
        probes["gateway"] = ProcessTreeCpu.of_pid(self.gateway.process.pid)
        probes["redis"] = ProcessTreeCpu.of_pid(self.redis.process.pid)
        probes.update(_postgres_probe(self.database, self.database_url))
        return probes

    def server_probes(self) -> tuple[str, ...]:
        return ("editor-a", "editor-b", "gateway", "redis")

    def rss_bytes(self) -> int:
        pids = [s.process.pid for s in (*self.editors, self.gateway) if s and s.process]
        assert self.redis.process is not None
        return tree_rss_bytes([*pids, self.redis.process.pid])

    def stored_text(self, doc_id: str) -> str | None:
        return fetch_document_text(self.editors[0].base_url, doc_id)

    def stop(self) -> None:
        for service in (self.gateway, *self.editors):
            if service is not None:
                service.stop()
        self.redis.stop()


def _postgres_probe(database: DatabaseKind, database_url: str) -> dict[str, ProcessTreeCpu]:
    if database != "postgres":
        return {}
    # The backends serving this database only: other work may use the same cluster.
    return {"postgres": ProcessTreeCpu(lambda: postgres_backends(database_url), descendants=False)}


@contextlib.contextmanager
def ours_single(
    database: DatabaseKind, *, cpus: str | None, max_connections: int
) -> Iterator[OursSingle]:
    """Our editor on a fresh database, stopped (and the database dropped) afterwards."""
    with fresh_database(database) as url:
        target = OursSingle(url, database, cpus=cpus, max_connections=max_connections)
        try:
            yield target
        finally:
            target.stop()


@contextlib.contextmanager
def ours_cross_pod(
    database: DatabaseKind, *, cpus: str | None, max_connections: int, max_rate: int
) -> Iterator[OursCrossPod]:
    """Two editors + Redis + gateway on a fresh database, stopped afterwards."""
    with fresh_database(database) as url:
        target = OursCrossPod(
            url, database, cpus=cpus, max_connections=max_connections, max_rate=max_rate
        )
        try:
            yield target
        finally:
            target.stop()


# --------------------------------------------------------------------------------------
# The reference server
# --------------------------------------------------------------------------------------


def reference_version() -> str:
    """The installed version of the reference package ("" when it is not installed)."""
    try:
        return str(json.loads((REFERENCE_DIR / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return ""


class Reference:
    """`@y/websocket-server` (its `y-websocket-server` bin) on a free loopback port.

    It reads HOST and PORT from the environment and serves every document at
    `ws://HOST:PORT/<doc>`. Without YPERSISTENCE it keeps documents in memory only.
    """

    name = "reference"

    def __init__(self, *, cpus: str | None, timeout: float = 15) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed: run `make install`")
        if not REFERENCE_SCRIPT.exists():
            raise RuntimeError(f"{REFERENCE_PACKAGE} is not installed: run `make install`")
        self.port = free_port()
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"reference-server-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("YPERSISTENCE", "CALLBACK_URL")}
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port)})
        command = [node, str(REFERENCE_SCRIPT)]
        with self.log_path.open("ab") as log:
            self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
                ["taskset", "-c", cpus, *command] if cpus else command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"the reference server did not start; see {self.log_path}") from None
        self.topology = f"{REFERENCE_PACKAGE} {reference_version()} (Node), in memory; direct"

    def ws_url(self, doc_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{doc_id}"

    def probes(self) -> dict[str, ProcessTreeCpu]:
        assert self.process is not None
        return {"node": ProcessTreeCpu.of_pid(self.process.pid)}

    def server_probes(self) -> tuple[str, ...]:
        return ("node",)

    def rss_bytes(self) -> int:
        assert self.process is not None
        return tree_rss_bytes([self.process.pid])

    def stored_text(self, doc_id: str) -> str | None:
        return None  # nothing is stored: the server's copy is not reachable from outside

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@contextlib.contextmanager
def reference(*, cpus: str | None) -> Iterator[Reference]:
    """The reference server, stopped afterwards."""
    target = Reference(cpus=cpus)
    try:
        yield target
    finally:
        target.stop()
