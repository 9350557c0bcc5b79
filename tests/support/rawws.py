"""WebSockets opened by hand on plain sockets: for clients no library lets us be
(one that never reads, one that trickles its handshake)."""

from __future__ import annotations

import base64
import os
import socket


def upgrade_request(port: int, path: str) -> bytes:
    """The bytes of a WebSocket upgrade request for `path` on a loopback port."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def never_reading_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket opened on a socket with a small receive buffer, never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_request(port, path))
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        assert byte, "the server closed during the handshake"
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock
