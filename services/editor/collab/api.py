"""The HTTP API: list and describe documents, read their state, post updates from backends."""

from __future__ import annotations

import json
import logging
from typing import Any

from collab_common.tokens import issue_token
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from collab.access import check_access, check_listing
from collab.docids import validate_doc_id
from collab.errors import (
    BadUpdate,
    CollabError,
    Forbidden,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnknownDocument,
)
from collab.runtime import get_registry
from collab.store import DocumentInfo

logger = logging.getLogger(__name__)


def error_response(error: CollabError) -> JsonResponse:
    """The JSON body every API error has: a stable code and a human message."""
    return JsonResponse(
        {"error": type(error).__name__, "message": error.detail}, status=error.http_status
    )


def _document_json(info: DocumentInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "size_bytes": info.size_bytes,
        "last_seq": info.last_seq,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
    }


def _bounded_int(raw: str | None, default: int, maximum: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        raise CollabError("limit and offset must be integers") from None
    return max(0, min(value, maximum))


def _scope(request: HttpRequest) -> dict[str, Any]:
    return getattr(request, "scope", {"headers": [], "query_string": b""})


@require_GET
async def list_documents(request: HttpRequest) -> JsonResponse:
    """GET /api/docs: documents, most recently updated first (?limit=&offset=).

    With authentication on, the list holds only the documents the token covers.
    """
    try:
        limit = _bounded_int(request.GET.get("limit"), 100, 1000)
        offset = _bounded_int(request.GET.get("offset"), 0, 10**9)
        registry = await get_registry()
        grant = check_listing(registry.config, _scope(request))
    except CollabError as error:
        return error_response(error)
    documents = await registry.store.list_documents(
        limit=limit,
        offset=offset,
        doc=grant.doc if grant else None,
        prefix=grant.prefix if grant else None,
    )
    return JsonResponse({"documents": [_document_json(info) for info in documents]})


@require_GET
async def document_detail(request: HttpRequest, doc_id: str) -> JsonResponse:
    """GET /api/docs/<id>: one document's metadata."""
    try:
        validate_doc_id(doc_id)
        registry = await get_registry()
        check_access(registry.config, _scope(request), doc_id)
        info = await registry.store.describe(doc_id)
        if info is None:
            raise UnknownDocument(f"no document {doc_id!r}")
    except CollabError as error:
        return error_response(error)
    body = _document_json(info)
    room = registry.rooms.get(doc_id)
    body["connections_here"] = len(room.peers) if room is not None else 0
    # Presence reaches every process serving the document, so the room's awareness
    # counts the people on all of them (the gateway routes this call to that room).
    body["people"] = len(room.awareness.states) if room is not None else 0
    return JsonResponse(body)


@require_GET
async def document_state(request: HttpRequest, doc_id: str) -> HttpResponse:
    """GET /api/docs/<id>/state: the whole stored document as one binary Yjs update."""
    try:
        validate_doc_id(doc_id)
        registry = await get_registry()
        check_access(registry.config, _scope(request), doc_id)
        tail = await registry.store.read_since(doc_id, 0)
        if tail.update is None:
            if await registry.store.describe(doc_id) is None:
                raise UnknownDocument(f"no document {doc_id!r}")
            update = b"\x00\x00"
        else:
            update = tail.update
    except CollabError as error:
        return error_response(error)
    response = HttpResponse(update, content_type="application/octet-stream")
    response["X-Collab-Seq"] = str(tail.last_seq)
    return response


@csrf_exempt
@require_POST
async def post_update(request: HttpRequest, doc_id: str) -> JsonResponse:
    """POST /api/docs/<id>/updates: apply a binary Yjs update and relay it like any other."""
    try:
        validate_doc_id(doc_id)
        registry = await get_registry()
        check_access(registry.config, _scope(request), doc_id, write=True)
        try:
            update = request.body
        except RequestDataTooBig:
            raise TooLarge("the update exceeds the maximum frame size") from None
        if not update:
            raise BadUpdate("the request body must be a binary Yjs update")
        room = await registry.acquire(doc_id)
        try:
            await registry.settled(room)
            durable = registry.accept_update(room, update, None)
            if durable is not None:
                await durable
            seq = room.seq.watermark
        finally:
            await registry.release(room)
    except CollabError as error:
        logger.info("refused update for %s: %s", doc_id, error.detail)
        return error_response(error)
    return JsonResponse({"id": doc_id, "changed": durable is not None, "seq": seq})


@require_POST
async def issue_user_token(request: HttpRequest) -> JsonResponse:
    """POST /api/tokens {"doc", "perm"}: a token for the logged-in Django user.

    Reading needs the `collab.view_document` permission, writing `collab.change_document`
    (superusers have both); the session cookie and CSRF token authenticate the call.
    """
    try:
        user = await request.auser()
        if not user.is_authenticated:
            raise Unauthenticated("log in first")
        try:
            body = json.loads(request.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CollabError("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise CollabError("the body must be a JSON object")
        doc_id = validate_doc_id(str(body.get("doc", "")))
        permission = body.get("perm", "write")
        if permission not in ("read", "write"):
            raise CollabError("perm must be 'read' or 'write'")
        needed = "collab.change_document" if permission == "write" else "collab.view_document"
        if not await user.ahas_perm(needed):
            raise Forbidden(f"your account lacks the {needed} permission")
        secret = settings.COLLAB_TOKEN_SECRET
        if not secret:
            raise Unavailable("COLLAB_TOKEN_SECRET is not set on this service")
    except CollabError as error:
        return error_response(error)
    ttl = settings.COLLAB_TOKEN_TTL_SECONDS
    token = issue_token(
        secret, subject=f"user:{user.pk}", permission=permission, doc=doc_id, ttl_seconds=ttl
    )
    return JsonResponse({"token": token, "doc": doc_id, "perm": permission, "expires_in": ttl})
