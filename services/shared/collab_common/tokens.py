"""Signed, expiring access tokens (JWT, HS256) scoped to one document or an id prefix.

The gateway and the editor verify the same tokens with the same secret
(`COLLAB_TOKEN_SECRET`), so an editor reached around the gateway is no hole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

import jwt

Permission = Literal["read", "write"]
ALGORITHM = "HS256"
COOKIE_NAME = "collab_token"


class TokenError(Exception):
    """A token that does not grant what was asked; `status` is 401 or 403."""

    def __init__(self, message: str, *, status: Literal[401, 403]) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: one document or every id with a prefix."""

    subject: str
    permission: Permission
    doc: str | None = None
    prefix: str | None = None

    def covers(self, doc_id: str) -> bool:
        """True when the token's scope includes `doc_id`."""
        if self.doc is not None:
            return doc_id == self.doc
        return self.prefix is not None and doc_id.startswith(self.prefix)

    @property
    def can_write(self) -> bool:
        """True for write tokens; read tokens receive everything but change nothing."""
        return self.permission == "write"


def issue_token(
    secret: str,
    *,
    subject: str,
    permission: Permission,
    doc: str | None = None,
    prefix: str | None = None,
    ttl_seconds: int = 3600,
) -> str:
    """Sign a token for exactly one of `doc` or `prefix`."""
    if (doc is None) == (prefix is None):
        raise ValueError("a token is scoped to exactly one of a document or a prefix")
    if permission not in ("read", "write"):
        raise ValueError("permission must be 'read' or 'write'")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "perm": permission, "iat": now}
    claims["exp"] = now + ttl_seconds
    if doc is not None:
        claims["doc"] = doc
    else:
        claims["prefix"] = prefix
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Grant:
    """Check signature, algorithm and expiry; return the grant or raise TokenError(401)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],  # never "none", never what the token itself claims
            options={"require": ["exp", "sub", "perm"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired", status=401) from None
    except jwt.InvalidTokenError as error:
        raise TokenError(f"invalid token ({type(error).__name__})", status=401) from None
    permission = claims.get("perm")
    doc, prefix = claims.get("doc"), claims.get("prefix")
    if permission not in ("read", "write"):
        raise TokenError("invalid token (permission)", status=401)
    if not isinstance(doc, str | None) or not isinstance(prefix, str | None):
        raise TokenError("invalid token (scope)", status=401)
    if (doc is None) == (prefix is None):
        raise TokenError("invalid token (scope)", status=401)
    return Grant(subject=str(claims["sub"]), permission=permission, doc=doc, prefix=prefix)


def authorize(secret: str, token: str | None, doc_id: str, *, write: bool = False) -> Grant:
    """The grant of `token` for `doc_id`; TokenError 401 without a valid token, 403 outside it."""
    if not token:
        raise TokenError("a token is required", status=401)
    grant = verify_token(secret, token)
    if not grant.covers(doc_id):
        raise TokenError("the token does not cover this document", status=403)
    if write and not grant.can_write:
        raise TokenError("the token is read-only", status=403)
    return grant


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """The token of an ASGI request: `?token=`, then `Authorization: Bearer`, then the cookie."""
    query_string: bytes = scope.get("query_string", b"")
    query = parse_qs(query_string.decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    for name, value in headers:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, cookie_value = part.strip().partition("=")
                if key == COOKIE_NAME and cookie_value:
                    return cookie_value
    return None
