"""Access tokens: issuing, verifying, authorizing, and finding them in an ASGI scope."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from collab_common.tokens import (
    Grant,
    TokenError,
    authorize,
    issue_token,
    token_from_scope,
    verify_token,
)

# 64 bytes: long enough for HS256, HS384 and HS512 without key-length warnings.
SECRET = "s" * 64
OTHER_SECRET = "o" * 64


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "perm": "write",
        "doc": "doc-1",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _assert_refused(token: str, status: int, *, secret: str = SECRET, doc: str = "doc-1") -> str:
    with pytest.raises(TokenError) as caught:
        authorize(secret, token, doc)
    assert caught.value.status == status
    return caught.value.message


# --- issuing and verifying -------------------------------------------------------------


def test_write_token_for_one_document_grants_write_on_that_document() -> None:
    token = issue_token(SECRET, subject="alice", permission="write", doc="doc-1")

    grant = authorize(SECRET, token, "doc-1", write=True)

    assert grant == Grant(subject="alice", permission="write", doc="doc-1", prefix=None)
    assert grant.can_write


def test_read_token_for_one_document_grants_read_only() -> None:
    token = issue_token(SECRET, subject="bob", permission="read", doc="doc-1")

    grant = authorize(SECRET, token, "doc-1")

    assert grant.subject == "bob"
    assert grant.permission == "read"
    assert not grant.can_write


def test_prefix_token_grants_every_document_under_the_prefix() -> None:
    token = issue_token(SECRET, subject="team", permission="write", prefix="team-a.")

    for doc_id in ("team-a.notes", "team-a.", "team-a.x.y"):
        grant = authorize(SECRET, token, doc_id, write=True)
        assert grant.prefix == "team-a."
        assert grant.doc is None


def test_read_prefix_token_grants_read_under_the_prefix() -> None:
    token = issue_token(SECRET, subject="viewer", permission="read", prefix="pub-")

    grant = authorize(SECRET, token, "pub-1")

    assert grant.permission == "read"


def test_verify_token_returns_the_issued_scope() -> None:
    token = issue_token(SECRET, subject="alice", permission="read", prefix="p/")

    assert verify_token(SECRET, token) == Grant("alice", "read", doc=None, prefix="p/")


# --- Grant.covers ----------------------------------------------------------------------


def test_document_grant_covers_only_the_exact_id() -> None:
    grant = Grant(subject="a", permission="read", doc="doc-1")

    assert grant.covers("doc-1")
    assert not grant.covers("doc-10")
    assert not grant.covers("doc-")
    assert not grant.covers("DOC-1")


def test_prefix_grant_covers_ids_starting_with_the_prefix() -> None:
    grant = Grant(subject="a", permission="read", prefix="team-a.")

    assert grant.covers("team-a.notes")
    assert grant.covers("team-a.")


def test_prefix_grant_does_not_cover_other_ids() -> None:
    grant = Grant(subject="a", permission="read", prefix="team-a.")

    assert not grant.covers("team-b.notes")
    assert not grant.covers("team-a")
    assert not grant.covers("xteam-a.notes")


def test_empty_prefix_covers_every_document() -> None:
    grant = Grant(subject="admin", permission="write", prefix="")

    assert grant.covers("anything")
    assert grant.covers("")


def test_empty_prefix_token_round_trips_and_covers_every_document() -> None:
    token = issue_token(SECRET, subject="admin", permission="write", prefix="")

    grant = authorize(SECRET, token, "any-doc", write=True)

    assert grant.prefix == ""


# --- refusals: 401 ---------------------------------------------------------------------


def test_expired_token_is_refused_with_401_token_expired() -> None:
    token = issue_token(SECRET, subject="alice", permission="write", doc="doc-1", ttl_seconds=-5)

    message = _assert_refused(token, 401)

    assert message == "token expired"


def test_token_signed_with_another_secret_is_refused_with_401() -> None:
    token = issue_token(OTHER_SECRET, subject="alice", permission="write", doc="doc-1")

    message = _assert_refused(token, 401)

    assert message.startswith("invalid token")


def test_unsigned_alg_none_token_is_refused_with_401() -> None:
    token = jwt.encode(_claims(), None, algorithm="none")

    _assert_refused(token, 401)


def test_hand_built_alg_none_token_is_refused_with_401() -> None:
    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(_claims())}."

    _assert_refused(token, 401)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_token_signed_with_right_secret_but_other_hmac_algorithm_is_refused(
    algorithm: str,
) -> None:
    token = jwt.encode(_claims(), SECRET, algorithm=algorithm)

    _assert_refused(token, 401)


def test_the_same_claims_signed_hs256_are_accepted() -> None:
    # Counterpart of the algorithm tests above: only the algorithm makes them fail.
    token = jwt.encode(_claims(), SECRET, algorithm="HS256")

    assert authorize(SECRET, token, "doc-1", write=True).subject == "alice"


@pytest.mark.parametrize("missing", ["exp", "sub", "perm"])
def test_token_missing_a_required_claim_is_refused_with_401(missing: str) -> None:
    token = jwt.encode(_claims(**{missing: None}), SECRET, algorithm="HS256")

    _assert_refused(token, 401)


def test_token_with_unknown_permission_is_refused_with_401() -> None:
    token = jwt.encode(_claims(perm="admin"), SECRET, algorithm="HS256")

    _assert_refused(token, 401)


def test_token_with_both_doc_and_prefix_is_refused_with_401() -> None:
    token = jwt.encode(_claims(prefix="doc-"), SECRET, algorithm="HS256")

    _assert_refused(token, 401)


def test_token_with_neither_doc_nor_prefix_is_refused_with_401() -> None:
    token = jwt.encode(_claims(doc=None), SECRET, algorithm="HS256")

    _assert_refused(token, 401)


def test_token_with_non_string_scope_is_refused_with_401() -> None:
    token = jwt.encode(_claims(doc=12), SECRET, algorithm="HS256")

    _assert_refused(token, 401, doc="12")


def test_issuing_with_both_doc_and_prefix_raises_value_error() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        issue_token(SECRET, subject="a", permission="read", doc="d", prefix="p")


def test_issuing_with_neither_doc_nor_prefix_raises_value_error() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        issue_token(SECRET, subject="a", permission="read")


def test_issuing_with_unknown_permission_raises_value_error() -> None:
    with pytest.raises(ValueError, match="permission"):
        issue_token(SECRET, subject="a", permission="admin", doc="d")  # type: ignore[arg-type]


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_is_refused_with_401(token: str | None) -> None:
    with pytest.raises(TokenError) as caught:
        authorize(SECRET, token, "doc-1")

    assert caught.value.status == 401


@pytest.mark.parametrize("garbage", ["not-a-token", "a.b.c", "....", "Bearer xyz"])
def test_garbage_token_is_refused_with_401(garbage: str) -> None:
    _assert_refused(garbage, 401)


# --- refusals: 403 ---------------------------------------------------------------------


def test_valid_token_for_another_document_is_refused_with_403() -> None:
    token = issue_token(SECRET, subject="alice", permission="write", doc="doc-1")

    _assert_refused(token, 403, doc="doc-2")


def test_prefix_token_outside_its_prefix_is_refused_with_403() -> None:
    token = issue_token(SECRET, subject="alice", permission="write", prefix="team-a.")

    _assert_refused(token, 403, doc="team-b.notes")


def test_read_token_asked_for_write_is_refused_with_403() -> None:
    token = issue_token(SECRET, subject="bob", permission="read", doc="doc-1")

    with pytest.raises(TokenError) as caught:
        authorize(SECRET, token, "doc-1", write=True)

    assert caught.value.status == 403
    assert "read-only" in caught.value.message


# --- token_from_scope ------------------------------------------------------------------


def _scope(query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "websocket", "query_string": query, "headers": headers or []}


def test_token_is_read_from_the_query_string() -> None:
    assert token_from_scope(_scope(b"room=1&token=abc.def.ghi&x=2")) == "abc.def.ghi"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_token_is_read_from_a_bearer_authorization_header(scheme: str) -> None:
    headers = [(b"authorization", f"{scheme} abc.def.ghi".encode())]

    assert token_from_scope(_scope(headers=headers)) == "abc.def.ghi"


def test_non_bearer_authorization_header_gives_no_token() -> None:
    headers = [(b"authorization", b"Basic dXNlcjpwYXNz")]

    assert token_from_scope(_scope(headers=headers)) is None


def test_token_is_read_from_the_collab_token_cookie_among_others() -> None:
    headers = [(b"cookie", b"session=xyz; collab_token=abc.def.ghi; theme=dark")]

    assert token_from_scope(_scope(headers=headers)) == "abc.def.ghi"


def test_cookie_with_a_similar_name_is_not_taken_for_the_token() -> None:
    headers = [(b"cookie", b"my_collab_token=nope; collab_token_old=nope")]

    assert token_from_scope(_scope(headers=headers)) is None


def test_query_token_wins_over_header_and_cookie() -> None:
    headers = [
        (b"authorization", b"Bearer from-header"),
        (b"cookie", b"collab_token=from-cookie"),
    ]

    assert token_from_scope(_scope(b"token=from-query", headers)) == "from-query"


def test_header_token_wins_over_cookie() -> None:
    headers = [
        (b"cookie", b"collab_token=from-cookie"),
        (b"authorization", b"Bearer from-header"),
    ]

    assert token_from_scope(_scope(headers=headers)) == "from-header"


def test_cookie_is_used_when_query_and_header_are_absent() -> None:
    headers = [(b"user-agent", b"test"), (b"cookie", b"collab_token=from-cookie")]

    assert token_from_scope(_scope(b"other=1", headers)) == "from-cookie"


def test_no_token_anywhere_gives_none() -> None:
    headers = [(b"user-agent", b"test"), (b"cookie", b"session=xyz")]

    assert token_from_scope(_scope(b"room=1", headers)) is None
    assert token_from_scope({"type": "websocket"}) is None
