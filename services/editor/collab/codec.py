"""The y-websocket wire protocol: frames in, typed messages out, and the frames we send.

Pure functions over bytes; the encoding itself is pycrdt's. The only checks written
here are the bounds that pycrdt's decoder leaves to its caller (it slices past the end
silently and lets a varint run on forever), because these frames come from strangers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pycrdt import Decoder, Encoder, YMessageType, YSyncMessageType, write_message

from collab.errors import BadFrame

# A length prefix longer than this cannot describe a frame we would accept anyway,
# and refusing it early keeps a hostile varint from costing quadratic time.
_MAX_VARINT_BYTES = 5
# y-protocols/auth: the only auth message type there is.
_PERMISSION_DENIED = 0


class MessageKind(IntEnum):
    """First varint of every y-websocket frame."""

    SYNC = YMessageType.SYNC
    AWARENESS = YMessageType.AWARENESS
    AUTH = 2
    QUERY_AWARENESS = 3


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """A peer's state vector: "send me what I am missing"."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The answer to a SyncStep1: every update the asker lacks."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    """Presence states (cursor, name, colour) of one or more clients."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """A request for every known awareness state."""


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | QueryAwareness


def parse(frame: bytes) -> Message:
    """Decode one binary frame into a message, or raise BadFrame saying what is wrong."""
    if not frame:
        raise BadFrame("empty frame")
    kind = frame[0]
    if kind == MessageKind.SYNC:
        if len(frame) < 2:
            raise BadFrame("sync frame without a sync type")
        sync_type = frame[1]
        payload = _read_payload(frame, 2)
        if sync_type == YSyncMessageType.SYNC_STEP1:
            return SyncStep1(payload)
        if sync_type == YSyncMessageType.SYNC_STEP2:
            return SyncStep2(payload)
        if sync_type == YSyncMessageType.SYNC_UPDATE:
            return SyncUpdate(payload)
        raise BadFrame(f"unknown sync type {sync_type}")
    if kind == MessageKind.AWARENESS:
        return AwarenessUpdate(_read_payload(frame, 1))
    if kind == MessageKind.QUERY_AWARENESS:
        if len(frame) != 1:
            raise BadFrame("query-awareness frame with trailing bytes")
        return QueryAwareness()
    if kind == MessageKind.AUTH:
        raise BadFrame("auth messages are sent by the server only")
    raise BadFrame(f"unknown message type {kind}")


def _read_payload(frame: bytes, offset: int) -> bytes:
    """Read the length-prefixed payload at `offset`; it must end exactly where the frame ends."""
    prefix = frame[offset : offset + _MAX_VARINT_BYTES]
    if not prefix or all(byte & 0x80 for byte in prefix):
        raise BadFrame("payload length is missing, truncated or too long")
    decoder = Decoder(prefix)
    length = decoder.read_var_uint()
    start = offset + decoder.i0
    if start + length != len(frame):
        raise BadFrame("payload length does not match the frame")
    return frame[start:]


def sync_step1_frame(state_vector: bytes) -> bytes:
    """Frame a SyncStep1 carrying `state_vector`."""
    return bytes((MessageKind.SYNC, YSyncMessageType.SYNC_STEP1)) + write_message(state_vector)


def sync_step2_frame(update: bytes) -> bytes:
    """Frame a SyncStep2 carrying `update`."""
    return bytes((MessageKind.SYNC, YSyncMessageType.SYNC_STEP2)) + write_message(update)


def update_frame(update: bytes) -> bytes:
    """Frame an incremental update."""
    return bytes((MessageKind.SYNC, YSyncMessageType.SYNC_UPDATE)) + write_message(update)


def permission_denied_frame(reason: str) -> bytes:
    """Frame the y-protocols auth message "permission denied" (sent to read-only writers)."""
    encoder = Encoder()
    encoder.write_var_uint(MessageKind.AUTH)
    encoder.write_var_uint(_PERMISSION_DENIED)
    encoder.write_var_string(reason)
    return encoder.to_bytes()


def awareness_frame(payload: bytes) -> bytes:
    """Frame an awareness update."""
    return bytes((MessageKind.AWARENESS,)) + write_message(payload)
