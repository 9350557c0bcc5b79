"""One client WebSocket relayed to one editor: checks first, then frames both ways."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import websockets
from collab_common.logs import conn_id_var, doc_id_var
from collab_common.ratelimit import TokenBucket
from collab_common.tokens import TokenError, authorize, token_from_scope
from collab_common.wsprotocol import aborter
from websockets.asyncio.client import ClientConnection, connect

from gateway import metrics

if TYPE_CHECKING:
    from gateway.app import Gateway

logger = logging.getLogger(__name__)
# The editor side of every relay logs here: `server.main` keeps it at INFO at least,
# because websockets logs headers and frame bytes at DEBUG.
UPSTREAM_LOGGER = "gateway.relay.upstream"
_upstream_logger = logging.getLogger(UPSTREAM_LOGGER)

DOC_PATH = re.compile(r"/ws/docs/([A-Za-z0-9._~-]{1,128})")  # used with fullmatch
# The editor checks tokens and Origin again (COLLAB_ALLOWED_ORIGINS): it needs both.
_FORWARDED_HEADERS = {b"authorization", b"cookie", b"origin", b"user-agent"}
# Codes a client may not send on the wire (RFC 6455 7.4.1): replaced when passing on.
_RESERVED = {1004, 1005, 1006, 1015}


class _Outcome(enum.IntEnum):
    """How a relay ended; lower values win when both sides end together."""

    CLIENT_GONE = 0
    CLIENT_STALLED = 1
    UPSTREAM_CLOSED = 2
    DRAIN = 3


class _ClientGone(Exception):
    """The client vanished while we were talking to it."""


class Refusal(Exception):
    """A reason to close the client connection, with the code and the metric label."""

    def __init__(self, code: int, reason: str, label: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.label = label


class RelaySession:
    """The life of one client connection through the gateway."""

    def __init__(self, gateway: Gateway, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.scope = scope
        self.receive = receive
        self.send = send
        self.client_ip = (scope.get("client") or ("unknown", 0))[0]
        self.doc_id = ""
        self.upstream_url = ""
        self.accepted = False
        self.bucket = TokenBucket(self.config.rate_per_second, self.config.rate_burst)

    async def run(self) -> None:
        """Check, dial, relay; every path ends with the client closed with a clear code."""
        message = await self.receive()
        if message["type"] != "websocket.connect":
            return
        conn_id_var.set(uuid.uuid4().hex[:12])
        counted = False
        try:
            self._check_request()
            if not self.gateway.limiter.acquire(self.client_ip):
                raise Refusal(4429, "too many connections from your address", "per_ip")
            counted = True
            upstream = await self._dial()
            await self._relay(upstream)
        except Refusal as refusal:
            metrics.REFUSALS.labels(refusal.label).inc()
            logger.info(
                "refused connection from %s to %s: %d %s",
                self.client_ip,
                self.doc_id or self.scope.get("path", ""),
                refusal.code,
                refusal.reason,
            )
            with contextlib.suppress(_ClientGone):
                await self._close_client(refusal.code, refusal.reason)
        finally:
            if counted:
                self.gateway.limiter.release(self.client_ip)

    def _check_request(self) -> None:
        if self.gateway.draining:
            raise Refusal(1012, "gateway restarting; reconnect", "draining")
        match = DOC_PATH.fullmatch(self.scope["path"])
        if match is None:
            raise Refusal(4400, "document ids are 1-128 characters of [A-Za-z0-9._~-]", "bad_path")
        self.doc_id = match.group(1)
        doc_id_var.set(self.doc_id)
        allowed = self.config.allowed_origins
        origin = _header(self.scope, b"origin")
        if allowed and origin not in allowed:
            raise Refusal(4403, "origin not allowed", "origin")
        if self.config.auth_required:
            assert self.config.token_secret is not None
            try:
                authorize(self.config.token_secret, token_from_scope(self.scope), self.doc_id)
            except TokenError as error:
                metrics.AUTH_FAILURES.labels(str(error.status)).inc()
                raise Refusal(4000 + error.status, error.message, "auth") from None

    async def _dial(self) -> ClientConnection:
        candidates = self.gateway.pool.choose(self.doc_id)
        # The affine upstream first; one fall-back if it fails to answer right now.
        for url in candidates[:2]:
            started = time.monotonic()
            try:
                upstream = await connect(
                    self._upstream_ws_url(url),
                    additional_headers=self._forwarded_headers(),
                    user_agent_header=None,
                    compression=None,
                    # The editor is trusted, and a SyncStep2 carries a whole document (up
                    # to COLLAB_MAX_DOCUMENT_BYTES) in one frame: no frame limit this way.
                    max_size=None,
                    max_queue=16,
                    open_timeout=self.config.dial_timeout_seconds,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    logger=_upstream_logger,
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
                logger.warning("cannot open a session on upstream %s: %s", url, error)
                self.gateway.pool.suspect(url)
                metrics.UPSTREAM_CLOSES.inc()
                continue
            metrics.DIAL_SECONDS.observe(time.monotonic() - started)
            self.upstream_url = url
            return upstream
        raise Refusal(1013, "no editor available; retry shortly", "no_upstream")

    def _upstream_ws_url(self, base: str) -> str:
        url = "ws" + base[4:] + self.scope["path"]
        query = self.scope.get("query_string", b"")
        return f"{url}?{query.decode('latin-1')}" if query else url

    def _forwarded_headers(self) -> list[tuple[str, str]]:
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.scope.get("headers", [])
            if name in _FORWARDED_HEADERS
        ]
        headers.append(("x-forwarded-for", self.client_ip))
        return headers

    async def _relay(self, upstream: ClientConnection) -> None:
        gauge = metrics.CONNECTIONS.labels(self.upstream_url)
        try:
            await self.send(
                {
                    "type": "websocket.accept",
                    "headers": [(b"x-collab-upstream", self.upstream_url.encode())],
                }
            )
            self.accepted = True
            metrics.CONNECTIONS_TOTAL.inc()
            gauge.inc()
            try:
                outcome = await self._pump(upstream)
            finally:
                gauge.dec()
            await self._finish(outcome, upstream)
        except _ClientGone:
            pass
        finally:
            # Bounded: an editor we stopped reading from may never answer a close handshake.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(upstream.close(), timeout=2)

    async def _pump(self, upstream: ClientConnection) -> _Outcome:
        """Relay both ways until one side ends; report which, client-side ends first."""
        tasks = {
            asyncio.create_task(self._client_to_upstream(upstream)),
            asyncio.create_task(self._upstream_to_client(upstream)),
            asyncio.create_task(self._drained()),
        }
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        outcomes = []
        for task in done:
            error = task.exception()
            if isinstance(error, Refusal):
                raise error
            if error is not None:
                logger.warning("relay of %s failed: %r", self.doc_id, error)
                outcomes.append(_Outcome.CLIENT_GONE)
            else:
                outcomes.append(task.result())
        # When both sides ended at once, what the client did decides: a client that left
        # says nothing about the editor's health.
        return min(outcomes)

    async def _drained(self) -> _Outcome:
        await self.gateway.closing.wait()
        return _Outcome.DRAIN

    async def _finish(self, outcome: _Outcome, upstream: ClientConnection) -> None:
        if outcome is _Outcome.DRAIN:
            await self._close_client(1012, "gateway restarting; reconnect")
        elif outcome is _Outcome.UPSTREAM_CLOSED:
            await self._upstream_closed(upstream)
        elif outcome is _Outcome.CLIENT_STALLED:
            metrics.REFUSALS.labels("slow_client").inc()
            logger.info("dropping a client that does not read (%s)", self.doc_id)
            self._abort_client()

    async def _upstream_closed(self, upstream: ClientConnection) -> None:
        received = upstream.protocol.close_rcvd
        if received is None or received.code in _RESERVED:
            # The editor died or the link broke: a retryable code sends the provider
            # back through the gateway, to a healthy editor.
            self.gateway.pool.suspect(self.upstream_url)
            metrics.UPSTREAM_CLOSES.inc()
            logger.info("upstream %s lost the session of %s", self.upstream_url, self.doc_id)
            await self._close_client(1013, "editor unavailable; reconnect")
        else:
            await self._close_client(received.code, received.reason)

    async def _client_to_upstream(self, upstream: ClientConnection) -> _Outcome:
        limit = self.config.max_frame_bytes
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                return _Outcome.CLIENT_GONE
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            if len(data) > limit:
                raise Refusal(4413, f"frame larger than {limit} bytes", "frame_size")
            if not self.bucket.take():
                raise Refusal(4429, "message rate limit exceeded", "rate")
            try:
                await upstream.send(data)
            except websockets.ConnectionClosed:
                return _Outcome.UPSTREAM_CLOSED
            metrics.FRAMES.labels("to_upstream").inc()
            metrics.BYTES.labels("to_upstream").inc(len(data))

    async def _upstream_to_client(self, upstream: ClientConnection) -> _Outcome:
        frames = metrics.FRAMES.labels("to_client")
        counted = metrics.BYTES.labels("to_client")
        timeout = self.config.send_timeout_seconds
        try:
            async for data in upstream:
                key = "bytes" if isinstance(data, bytes) else "text"
                try:
                    # A client that takes nothing for this long is not coming back. Not
                    # asyncio.wait_for: on Python 3.11 it swallows a cancellation that lands
                    # as the send completes, and this task, cancelled by _pump when the client
                    # side ends (a frame over the limit), would then wait for the editor's
                    # next frame forever, leaving the client neither refused nor closed.
                    async with asyncio.timeout(timeout):
                        await self.send({"type": "websocket.send", key: data})
                except TimeoutError:
                    return _Outcome.CLIENT_STALLED
                except Exception:  # uvicorn's ClientDisconnected, a reset socket
                    return _Outcome.CLIENT_GONE
                frames.inc()
                counted.inc(len(data))
        except websockets.ConnectionClosed:
            pass
        return _Outcome.UPSTREAM_CLOSED

    def _abort_client(self) -> None:
        abort = aborter(self.scope)
        if abort is not None:
            abort()

    async def _close_client(self, code: int, reason: str) -> None:
        message: dict[str, Any] = {"type": "websocket.close", "code": code, "reason": reason[:120]}
        try:
            if not self.accepted:
                # Close codes reach the client only on an accepted socket.
                await self.send({"type": "websocket.accept"})
                self.accepted = True
            # A client that stopped reading cannot take a close frame either.
            await asyncio.wait_for(self.send(message), timeout=2)
        except TimeoutError:
            self._abort_client()
        except Exception:
            raise _ClientGone() from None


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
