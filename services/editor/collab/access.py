"""Who may read or write a document: token checks shared by the socket and HTTP edges,
and the Origin allow-list that runs before either."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from collab_common.tokens import Grant, TokenError, authorize, token_from_scope, verify_token

from collab import metrics
from collab.conf import CollabConfig
from collab.errors import CloseCode, CollabError, Forbidden, Unauthenticated

logger = logging.getLogger(__name__)

ORIGIN_REFUSED = "origin not allowed"  # the gateway's words for the same refusal
_ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def check_access(
    config: CollabConfig, scope: dict[str, Any], doc_id: str, *, write: bool = False
) -> Grant | None:
    """The caller's grant for `doc_id`, None when auth is off; raises 4401/4403 errors."""
    if not config.auth_required:
        return None
    assert config.token_secret is not None  # settings refuse to start without it
    try:
        return authorize(config.token_secret, token_from_scope(scope), doc_id, write=write)
    except TokenError as error:
        raise _as_collab_error(error) from None


def check_listing(config: CollabConfig, scope: dict[str, Any]) -> Grant | None:
    """The grant that bounds a document listing, None when auth is off."""
    if not config.auth_required:
        return None
    assert config.token_secret is not None
    token = token_from_scope(scope)
    if not token:
        raise Unauthenticated("a token is required")
    try:
        return verify_token(config.token_secret, token)
    except TokenError as error:
        raise _as_collab_error(error) from None


def _as_collab_error(error: TokenError) -> CollabError:
    if error.status == 401:
        return Unauthenticated(error.message)
    return Forbidden(error.message)


def _origin(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"origin":
            return str(value.decode("latin-1"))
    return None


def origin_allowed(allowed: Collection[str], scope: dict[str, Any]) -> bool:
    """Whether the request's Origin passes COLLAB_ALLOWED_ORIGINS (an empty list: any).

    WebSocket handshakes must carry a listed Origin, as at the gateway: browsers always
    send one, so a missing Origin is a client that chose not to. HTTP requests without
    an Origin pass (same-origin GETs and backends send none); one that carries an
    unlisted Origin (a page of another site calling the API) does not.
    """
    if not allowed:
        return True
    origin = _origin(scope)
    if origin is None:
        return bool(scope["type"] != "websocket")
    return origin in allowed


class OriginGuard:
    """ASGI middleware: refuse sockets (4403) and API calls (403) from unlisted Origins.

    It runs before routing, tokens and the database, so a refused request costs nothing.
    Probes, pages and static files are not guarded: pages carry no document content and
    Django's CSRF check already compares the Origin of their form posts.
    """

    def __init__(self, app: _ASGIApp, allowed: Collection[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        guarded = kind == "websocket" or (
            kind == "http" and str(scope.get("path", "")).startswith("/api/")
        )
        if not guarded or origin_allowed(self.allowed, scope):
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await self._refuse_socket(receive, send)
        else:
            await self._refuse_request(scope, send)

    async def _refuse_socket(self, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        logger.info("closing connection: %d %s", CloseCode.FORBIDDEN, ORIGIN_REFUSED)
        metrics.REFUSED_CONNECTIONS.labels("origin").inc()
        # Close codes reach the client only on an accepted socket (a handshake refused
        # with HTTP 403 shows up in browsers as 1006, with no reason).
        await send({"type": "websocket.accept"})
        await send(
            {"type": "websocket.close", "code": CloseCode.FORBIDDEN, "reason": ORIGIN_REFUSED}
        )

    async def _refuse_request(self, scope: dict[str, Any], send: Any) -> None:
        logger.info("refused %s %s: 403 %s", scope.get("method"), scope.get("path"), ORIGIN_REFUSED)
        body = json.dumps({"error": Forbidden.__name__, "message": ORIGIN_REFUSED}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": Forbidden.http_status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"vary", b"Origin"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
