"""A single editor process for the abuse tests: one worker, so every socket shares one room."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.fuzz.live import close_code_after, raw_socket, worker_pids
from tests.support.processes import EditorInstance, PostgresDatabase


def start_editor(
    editors: list[EditorInstance],
    pg: PostgresDatabase,
    *,
    name: str = "abuse-editor",
    redis_url: str | None = None,
    workers: int = 1,
    **env: str,
) -> EditorInstance:
    editor = EditorInstance(
        name,
        database_url=pg.url,
        redis_url=redis_url,
        workers=workers,
        extra_env={"COLLAB_LOG_LEVEL": "WARNING", **env},
    )
    editors.append(editor)
    editor.start()
    return editor


async def send_and_close_code(
    url: str, frame: bytes, timeout: float = 10
) -> tuple[int | None, float]:
    """Open a socket, send one frame, wait for the close: (code, seconds it took)."""
    ws = await raw_socket(url)
    started = time.monotonic()
    await ws.send(frame)
    code = await close_code_after(ws, timeout=timeout)
    return code, time.monotonic() - started


async def send_frames(url: str, frames: list[bytes]) -> Any:
    """Open a socket and send frames that must be accepted; return it (still open)."""
    ws = await raw_socket(url)
    for frame in frames:
        await ws.send(frame)
    return ws


async def round_trip(ws: Any, timeout: float = 10) -> float:
    """Seconds for the server to answer a SyncStep1 on `ws` (its event loop is alive)."""
    started = time.monotonic()
    await ws.send(b"\x00\x00\x01\x00")
    async with asyncio.timeout(timeout):
        while True:
            reply = await ws.recv()
            if isinstance(reply, bytes) and reply[:2] == b"\x00\x01":
                return time.monotonic() - started


def only_worker(editor: EditorInstance) -> int:
    (pid,) = worker_pids(editor)
    return pid
