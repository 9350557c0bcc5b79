"""Every message this service sends over the channel layer, one TypedDict each."""

from __future__ import annotations

from typing import Literal, TypedDict


class UpdateEvent(TypedDict):
    """Updates of one document that became durable together, numbered first_seq..last_seq."""

    type: Literal["collab.update"]
    doc: str
    origin: str
    first_seq: int
    last_seq: int
    updates: list[bytes]
    sent_at: float  # wall clock of the publisher, for the cross-process relay latency


class AwarenessEvent(TypedDict):
    """An awareness payload (presence) for one document; never stored."""

    type: Literal["collab.awareness"]
    doc: str
    origin: str
    payload: bytes


class AwarenessQueryEvent(TypedDict):
    """A process that just loaded a document asks the others for their peers' presence."""

    type: Literal["collab.awareness_query"]
    doc: str
    origin: str


Event = UpdateEvent | AwarenessEvent | AwarenessQueryEvent
