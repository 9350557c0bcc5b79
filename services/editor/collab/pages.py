"""Browser pages served by the editor service: the document list and the editor.

The pages are small server-rendered shells; the editor itself is the bundled JavaScript
in static/collab/ (built from services/editor/frontend/ by `npm run build`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET

from collab.docids import validate_doc_id
from collab.errors import InvalidDocumentId
from collab.runtime import get_registry

# collab.docids.DOC_ID_PATTERN for the `pattern` attribute, whose regular expressions use
# the `v` flag: a literal "-" in a character class needs its backslash there.
DOC_ID_HTML_PATTERN = r"[A-Za-z0-9._~\-]{1,128}"
DOC_ID_RULE = "Use 1-128 letters, digits, dots, dashes, underscores or tildes (no spaces)."


def editor_url(doc_id: str) -> str:
    """The editor page of a (valid) document id."""
    return "/d/" + quote(doc_id, safe="")


def login_url(next_path: str) -> str:
    """The sign-in page, coming back to `next_path` afterwards."""
    return f"{settings.LOGIN_URL}?{urlencode({'next': next_path}, safe='/')}"


async def _signed_in_name(request: HttpRequest) -> str | None:
    user = await request.auser()
    return user.get_username() if user.is_authenticated else None


@require_GET
async def index(request: HttpRequest) -> HttpResponse:
    """The landing page: documents with size, last edit and people, and an open form.

    `?doc=<id>` (the form) redirects to the document's editor, or shows what is wrong.
    With authentication on, only signed-in users with `collab.view_document` see the list.
    """
    requested = request.GET.get("doc")
    error = ""
    if requested is not None:
        requested = requested.strip()
        try:
            return HttpResponseRedirect(editor_url(validate_doc_id(requested)))
        except InvalidDocumentId:
            error = (
                f"“{requested}” is not a valid document name. {DOC_ID_RULE}"
                if requested
                else "Enter a document name."
            )
    user = await request.auser()
    auth_required: bool = settings.COLLAB_AUTH_REQUIRED
    can_list = not auth_required or await user.ahas_perm("collab.view_document")
    documents = []
    if can_list:
        registry = await get_registry()
        documents = await registry.store.list_documents(limit=100)
    context: dict[str, Any] = {
        "documents": documents,
        "can_list": can_list,
        "auth_required": auth_required,
        "user_name": user.get_username() if user.is_authenticated else None,
        "login_url": login_url("/"),
        "requested": requested or "",
        "error": error,
        "doc_id_pattern": DOC_ID_HTML_PATTERN,
        "doc_id_rule": DOC_ID_RULE,
        "page_config": {
            "authRequired": auth_required,
            "csrfToken": get_token(request) if auth_required and user.is_authenticated else "",
            "tokenUrl": "/api/tokens",
            "docIdRule": DOC_ID_RULE,
        },
    }
    return TemplateResponse(request, "collab/index.html", context, status=400 if error else 200)


@require_GET
async def editor(request: HttpRequest, doc_id: str) -> HttpResponse:
    """The collaborative editor of one document (created by its first edit)."""
    try:
        validate_doc_id(doc_id)
    except InvalidDocumentId:
        context = {
            "invalid": True,
            "requested": doc_id,
            "error": f"“{doc_id}” is not a valid document name. {DOC_ID_RULE}",
            "doc_id_pattern": DOC_ID_HTML_PATTERN,
            "doc_id_rule": DOC_ID_RULE,
            "page_config": {"authRequired": False, "csrfToken": ""},
        }
        return TemplateResponse(request, "collab/index.html", context, status=404)
    auth_required: bool = settings.COLLAB_AUTH_REQUIRED
    user_name = await _signed_in_name(request)
    if auth_required and user_name is None:
        return HttpResponseRedirect(login_url(editor_url(doc_id)))
    config = {
        "docId": doc_id,
        "wsPath": "/ws/docs",
        "authRequired": auth_required,
        "userName": user_name,
        # The token endpoint needs the CSRF token; get_token also sets the cookie.
        "csrfToken": get_token(request) if auth_required else "",
        "tokenUrl": "/api/tokens",
        "loginUrl": login_url(editor_url(doc_id)),
    }
    context = {"doc_id": doc_id, "user_name": user_name, "page_config": config}
    return TemplateResponse(request, "collab/editor.html", context)
