"""Helpers for tests against real editor and gateway processes: workers, memory, raw sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from pycrdt import Doc, Text

from tests.fuzz.frames import MAX_DOCUMENT_BYTES, MAX_FRAME_BYTES
from tests.support.processes import EditorInstance

# The editor's limits in these tests: the same numbers the in-process oracle uses.
EDITOR_LIMITS = {
    "COLLAB_MAX_FRAME_BYTES": str(MAX_FRAME_BYTES),
    "COLLAB_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES),
    "COLLAB_LOG_LEVEL": "WARNING",  # one INFO line per refusal would dominate the run
}


def worker_pids(editor: EditorInstance) -> set[int]:
    """The gunicorn workers of an editor (children of its master process)."""
    assert editor.process is not None
    master = editor.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def status_kib(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS: now, VmHWM: the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def total_rss_bytes(pids: set[int]) -> int:
    return sum(status_kib(pid, "VmRSS") for pid in pids) * 1024


def peak_rss_bytes(pids: set[int]) -> int:
    return max(status_kib(pid, "VmHWM") for pid in pids) * 1024


async def close_code_after(ws: Any, timeout: float = 10) -> int | None:
    """Read (and drop) frames until the server closes; the close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed:
        pass
    except TimeoutError:
        return None  # still open
    return ws.close_code


async def raw_socket(url: str, **kwargs: Any) -> Any:
    return await websockets.connect(url, max_size=None, compression=None, **kwargs)


async def http_get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


async def stored_state(base_url: str, doc_id: str) -> bytes:
    """GET /api/docs/<id>/state: the stored document; it must load into a fresh Doc."""
    response = await http_get(f"{base_url}/api/docs/{doc_id}/state")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    Doc().apply_update(response.content)
    return response.content


def text_of(update: bytes) -> str:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return str(doc.get("text", type=Text))


def server_holds(sock: socket.socket) -> bool:
    """Whether the server's end of `sock` is still an established connection.

    Read from /proc/net/tcp: once the server closes or aborts its end it is gone or in
    FIN_WAIT (the kernel may keep an orphan trying to deliver the last bytes to a client
    that never reads: that is no longer the server's). The client's own end would not
    tell: unread data hides the server's FIN from a client that never reads.
    """
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if int(local.rsplit(":", 1)[1], 16) == server_port and (
            int(remote.rsplit(":", 1)[1], 16) == client_port
        ):
            return state == "01"  # TCP_ESTABLISHED
    return False


def wait_closed(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server lets go of `sock`, or None if it still holds it after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not server_holds(sock):
            return time.monotonic() - started
        time.sleep(0.05)
    return None
