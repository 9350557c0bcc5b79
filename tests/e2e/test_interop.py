"""Interoperability: stock Yjs clients (y-websocket on Node) and pycrdt edit one document.

Two editor instances share PostgreSQL and Redis. One unmodified `WebsocketProvider` client
runs under Node against each instance, and a pycrdt client joins the first instance; all
three edit the same document at once. Every client must end with the same text and map,
holding every edit exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from pycrdt import Map

from tests.support.processes import ROOT, EditorInstance, PostgresDatabase, RedisServer
from tests.support.yclient import YClient, wait_until

NODE_CLIENT = ROOT / "tests" / "node" / "yjs_client.mjs"
NODE_MODULES = ROOT / "node_modules"
NODE_PACKAGES = ("yjs", "y-websocket", "y-protocols", "ws")
EDITS_PER_CLIENT = 150
EDIT_SPACING_SECONDS = 0.003
DEADLINE_SECONDS = 30.0


def node_executable() -> str:
    """The `node` binary, failing the test when it or the npm packages are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make install`")
    missing = [name for name in NODE_PACKAGES if not (NODE_MODULES / name).is_dir()]
    if missing:
        pytest.fail(f"node_modules lacks {', '.join(missing)}: run `make install`")
    return node


class NodeClient:
    """One `tests/node/yjs_client.mjs` process; its stderr is kept for failure messages."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self._stderr: list[str] = []
        self._stderr_reader = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(
        cls, node: str, server_url: str, doc_id: str, name: str, edits: int
    ) -> NodeClient:
        process = await asyncio.create_subprocess_exec(
            node,
            str(NODE_CLIENT),
            server_url,
            doc_id,
            name,
            str(edits),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(name, process)

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self._stderr.append(line.decode(errors="replace"))

    def diagnostics(self) -> str:
        status = "running" if self.process.returncode is None else f"exit {self.process.returncode}"
        return f"node client {self.name} ({status}), stderr:\n{''.join(self._stderr) or '(empty)'}"

    async def final_state(self, *, tokens: int, keys: int, timeout: float) -> dict[str, Any]:
        """Ask for the state once it holds `tokens` tokens and `keys` keys; the client exits."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = json.dumps({"expect_tokens": tokens, "expect_keys": keys}) + "\n"
        self.process.stdin.write(request.encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self.process.stdin.drain()
            self.process.stdin.close()
            await self.process.stdin.wait_closed()
        try:
            async with asyncio.timeout(timeout):
                output = await self.process.stdout.read()
                await self.process.wait()
                await self._stderr_reader
        except TimeoutError:
            raise AssertionError(f"no answer in {timeout}s from {self.diagnostics()}") from None
        assert self.process.returncode == 0, self.diagnostics()
        lines = output.decode().splitlines()
        assert len(lines) == 1, f"expected one JSON line, got {lines!r}; {self.diagnostics()}"
        state: dict[str, Any] = json.loads(lines[0])
        return state

    async def stop(self) -> None:
        """Kill the process if it still runs."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._stderr_reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_reader


def tokens_of(text: str) -> Counter[str]:
    """The `;`-terminated tokens of a text and how often each occurs."""
    assert text.endswith(";"), f"text does not end with a whole token: {text[-40:]!r}"
    return Counter(text.split(";")[:-1])


async def edit_with_pycrdt(client: YClient, name: str, edits: int) -> None:
    """The pycrdt client's edits: the same tokens and keys the Node clients write."""
    shared_map = client.doc.get("map", type=Map)
    for index in range(edits):
        with client.doc.transaction():
            client.insert(f"{name}-{index};")
            shared_map[f"{name}-{index}"] = index
        await asyncio.sleep(EDIT_SPACING_SECONDS)


async def test_node_yjs_clients_and_pycrdt_client_converge_across_instances(
    redis_server: RedisServer,
    pg_database: PostgresDatabase,
    editors: list[EditorInstance],
) -> None:
    node = node_executable()
    for name in ("interop-a", "interop-b"):
        editors.append(
            EditorInstance(
                name, database_url=pg_database.url, redis_url=redis_server.url, workers=2
            )
        )
    await asyncio.gather(*(asyncio.to_thread(instance.start) for instance in editors))
    instance_a, instance_b = editors

    doc_id = f"interop-{uuid.uuid4().hex[:12]}"
    names = {"node-a": instance_a, "node-b": instance_b}
    python_name = "pycrdt"
    expected_tokens = Counter(
        f"{name}-{index}" for name in [*names, python_name] for index in range(EDITS_PER_CLIENT)
    )
    expected_map = {token: int(token.rsplit("-", 1)[1]) for token in expected_tokens}

    python = YClient(f"{instance_a.ws_url}/{doc_id}", name=python_name)
    python_map = python.doc.get("map", type=Map)
    node_clients: list[NodeClient] = []
    try:
        await python.connect()
        await python.set_presence({"user": {"name": python_name}})
        for name, instance in names.items():
            node_clients.append(
                await NodeClient.start(node, instance.ws_url, doc_id, name, EDITS_PER_CLIENT)
            )

        async def wait_for(predicate: Callable[[], bool], what: str) -> None:
            try:
                await wait_until(predicate, timeout=DEADLINE_SECONDS, what=what)
            except AssertionError as error:
                details = "\n".join(client.diagnostics() for client in node_clients)
                raise AssertionError(f"{error}\n{details}") from None

        # Start editing once both Node clients are editing too, so that the edits overlap.
        await wait_for(
            lambda: all(f"{name}-0;" in str(python.text) for name in names),
            "the first edit of each Node client",
        )
        await edit_with_pycrdt(python, python_name, EDITS_PER_CLIENT)
        await python.flushed()

        # Presence flows too: the pycrdt client sees both Node clients, across instances.
        await wait_for(
            lambda: (
                {state.get("user", {}).get("name") for state in python.remote_presence().values()}
                >= set(names)
            ),
            "the presence of both Node clients",
        )

        total = sum(expected_tokens.values())
        node_states = await asyncio.gather(
            *(
                client.final_state(tokens=total, keys=len(expected_map), timeout=DEADLINE_SECONDS)
                for client in node_clients
            )
        )
        await wait_for(
            lambda: str(python.text).count(";") == total and len(python_map) == len(expected_map),
            f"{total} tokens and {len(expected_map)} keys in the pycrdt client",
        )
        python_state = {"text": str(python.text), "map": python_map.to_py()}
    finally:
        await python.close()
        for client in node_clients:
            await client.stop()

    states = {"pycrdt": python_state, **dict(zip(names, node_states, strict=True))}
    for name, state in states.items():
        assert tokens_of(state["text"]) == expected_tokens, f"{name} lacks or repeats tokens"
        assert state["map"] == expected_map, f"{name} has a different map"
    texts = {name: state["text"] for name, state in states.items()}
    assert len(set(texts.values())) == 1, f"the clients' texts differ: {texts}"
    # The edits overlapped: the authors' tokens interleave instead of forming three blocks.
    authors = [token.rsplit("-", 1)[0] for token in texts["pycrdt"].split(";")[:-1]]
    switches = sum(1 for before, after in itertools.pairwise(authors) if before != after)
    assert switches > 2, f"the clients' edits did not overlap: {texts['pycrdt'][:200]!r}"
