"""The collaboration error family; each error carries the WebSocket close code it maps to."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """WebSocket close codes the service uses (documented in the README)."""

    NORMAL = 1000
    INTERNAL_ERROR = 1011
    RESTARTING = 1012
    TRY_AGAIN_LATER = 1013
    BAD_FRAME = 4400
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    UNKNOWN_DOCUMENT = 4404
    TOO_LARGE = 4413
    RATE_LIMITED = 4429


class CollabError(Exception):
    """Base of every error that ends one connection or request; never the process."""

    label = "bad_request"  # metric label of refusals

    close_code: CloseCode = CloseCode.BAD_FRAME
    http_status: int = 400
    reason: str = "bad request"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.reason
        super().__init__(self.detail)


class BadFrame(CollabError):
    """A frame that does not decode as a y-websocket message."""

    label = "bad_frame"  # metric label of refusals

    close_code = CloseCode.BAD_FRAME
    http_status = 400
    reason = "malformed frame"


class BadUpdate(CollabError):
    """A frame that decodes but carries an update Yjs refuses.

    yrs cannot roll back: when it fails part-way, what it integrated before the failure
    stays in the document. `partial` is that change; it must be stored and relayed like
    any accepted change, or the room would drift from storage and from its peers.
    """

    label = "bad_update"  # metric label of refusals

    close_code = CloseCode.BAD_FRAME
    http_status = 400
    reason = "invalid Yjs update"

    def __init__(self, detail: str | None = None, *, partial: bytes | None = None) -> None:
        super().__init__(detail)
        self.partial = partial


class UpdateWaits(BadUpdate):
    """An update that depends on changes the server does not have.

    Honest clients send these just after a reconnect, edits typed before their sync
    brings what those edits build on; the sync that follows carries them again. The
    connection stays open for a few of them (see Session), and the server asks the
    client for what it lacks.
    """


class InvalidDocumentId(CollabError):
    """A document id outside 1-128 characters of [A-Za-z0-9._~-]."""

    label = "invalid_document"  # metric label of refusals

    close_code = CloseCode.BAD_FRAME
    http_status = 400
    reason = "invalid document id"


class Unauthenticated(CollabError):
    """No token, or a token that is expired, forged or malformed."""

    label = "unauthenticated"  # metric label of refusals

    close_code = CloseCode.UNAUTHENTICATED
    http_status = 401
    reason = "authentication required"


class Forbidden(CollabError):
    """A valid token that does not grant this document or this action."""

    label = "forbidden"  # metric label of refusals

    close_code = CloseCode.FORBIDDEN
    http_status = 403
    reason = "forbidden"


class UnknownDocument(CollabError):
    """A document that does not exist (HTTP lookups only; sockets create documents)."""

    label = "unknown_document"  # metric label of refusals

    close_code = CloseCode.UNKNOWN_DOCUMENT
    http_status = 404
    reason = "unknown document"


class TooLarge(CollabError):
    """A frame or a document above its configured size limit."""

    label = "too_large"  # metric label of refusals

    close_code = CloseCode.TOO_LARGE
    http_status = 413
    reason = "too large"


class RateLimited(CollabError):
    """A connection sending more messages than COLLAB_RATE_PER_SECOND (burst COLLAB_RATE_BURST)."""

    label = "rate_limited"  # metric label of refusals

    close_code = CloseCode.RATE_LIMITED
    http_status = 429
    reason = "message rate limit exceeded"


class SlowConsumer(CollabError):
    """A client that does not read fast enough; its send queue is full."""

    label = "slow_consumer"  # metric label of refusals

    close_code = CloseCode.TRY_AGAIN_LATER
    http_status = 503
    reason = "send queue full"


class Unavailable(CollabError):
    """The service cannot take the request now (shutting down, storage unreachable)."""

    label = "unavailable"  # metric label of refusals

    close_code = CloseCode.TRY_AGAIN_LATER
    http_status = 503
    reason = "temporarily unavailable"


class InternalError(CollabError):
    """A fault of the server, not of the client: logged with its traceback, code 1011."""

    label = "internal_error"  # metric label of refusals

    close_code = CloseCode.INTERNAL_ERROR
    http_status = 500
    reason = "the server failed to handle this message"
