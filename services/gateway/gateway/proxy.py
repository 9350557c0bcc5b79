"""HTTP requests (API, pages, static files) passed on to an editor."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import httpx

from gateway import metrics

if TYPE_CHECKING:
    from gateway.app import Gateway

logger = logging.getLogger(__name__)

_DOC_API = re.compile(r"^/api/docs/([^/]+)")
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}


async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    """Answer with a small JSON document."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body, or None when it exceeds `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def proxy_http(gateway: Gateway, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Forward one request to the document's editor (or any healthy one) and stream back."""
    path: str = scope["path"]
    match = _DOC_API.match(path)
    candidates = gateway.pool.choose(match.group(1) if match else path)
    if not candidates:
        metrics.HTTP_REQUESTS.labels("5xx").inc()
        await send_json(send, 503, {"error": "Unavailable", "message": "no editor available"})
        return
    # Bodies are small (API updates are capped at the frame limit); reading them whole
    # lets the editor see an exact Content-Length and keeps slow uploads off the editors.
    body = await _read_body(receive, gateway.config.max_frame_bytes)
    if body is None:
        metrics.HTTP_REQUESTS.labels("4xx").inc()
        await send_json(send, 413, {"error": "TooLarge", "message": "request body too large"})
        return
    upstream = candidates[0]
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope.get("headers", [])
        if name not in _HOP_BY_HOP
    ]
    client_ip = (scope.get("client") or ("unknown", 0))[0]
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
    headers += [
        ("x-forwarded-for", client_ip),
        ("x-forwarded-proto", scope.get("scheme", "http")),
        ("x-forwarded-host", host),
    ]
    target = upstream + scope.get("raw_path", path.encode()).decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    request = gateway.http.build_request(scope["method"], target, headers=headers, content=body)
    try:
        response = await gateway.http.send(request, stream=True)
    except httpx.HTTPError as error:
        logger.warning("proxying %s to %s failed: %s", path, upstream, type(error).__name__)
        gateway.pool.suspect(upstream)
        metrics.HTTP_REQUESTS.labels("5xx").inc()
        await send_json(send, 502, {"error": "BadGateway", "message": "the editor did not answer"})
        return
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (name, value)
                    for name, value in response.headers.raw
                    if name.lower() not in _HOP_BY_HOP
                ],
            }
        )
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await response.aclose()
    metrics.HTTP_REQUESTS.labels(f"{response.status_code // 100}xx").inc()
