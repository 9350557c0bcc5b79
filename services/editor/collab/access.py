"""Who may read or write a document: token checks shared by the socket and HTTP edges."""

from __future__ import annotations

from typing import Any

from collab_common.tokens import Grant, TokenError, authorize, token_from_scope, verify_token

from collab.conf import CollabConfig
from collab.errors import CollabError, Forbidden, Unauthenticated


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
