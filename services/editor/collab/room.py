"""One document in one process: its pycrdt Doc, its Awareness and its local peers.

Pure and synchronous: bytes in, frames out to peers, no I/O and no Django. The
orchestration around it (loading, persistence, cross-process fan-out) lives in
`registry.py` and `session.py`.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn, Protocol

from pycrdt import Awareness, Decoder, Doc, TransactionEvent, merge_updates

from collab.codec import awareness_frame, sync_step1_frame, sync_step2_frame
from collab.dependencies import waiting_part
from collab.errors import BadFrame, BadUpdate, TooLarge, UpdateWaits

# An empty state vector: what a client with nothing yet asks for in its SyncStep1.
_EMPTY_STATE_VECTOR = b"\x00"
# An update that changes nothing; y-websocket clients send it often.
_EMPTY_UPDATE = b"\x00\x00"


# Enough varint bytes for any count a real update carries (and for any that is too big).
_MAX_COUNT_BYTES = 5


class Peer(Protocol):
    """A local connection as a room sees it."""

    awareness_ids: set[int]

    def send(self, frame: bytes) -> None:
        """Queue a frame for the client without waiting."""


def _check_client_count(update: bytes) -> None:
    """Refuse an update whose first varint claims more clients than it has bytes.

    yrs reserves room for that many clients before reading further: four bytes
    (`ff ff ff 7f`) made it allocate ~512 MB and block the event loop for most of a
    second before failing. Every client takes at least three bytes, so a count above
    the update's length can only be a lie.
    """
    count = 0
    for shift, byte in enumerate(update[:_MAX_COUNT_BYTES]):
        count |= (byte & 0x7F) << (7 * shift)
        if not byte & 0x80:
            break
    if count > len(update):
        raise BadUpdate("the update claims more clients than it has bytes")


def contain_yrs_errors(error: BaseException) -> bool:
    """True for errors the Rust engine raises on bad input, including its panics.

    A panic inside yrs reaches Python as pyo3_runtime.PanicException, which derives
    from BaseException; cancellation and interpreter exits must still propagate.
    """
    if isinstance(error, Exception):
        return True
    return _is_panic(error)


def _is_panic(error: BaseException) -> bool:
    return type(error).__name__ == "PanicException"


def _refuse_constant(name: str) -> NoReturn:
    raise BadFrame(f"a presence state contains {name}, which JSON does not allow")


def _finite_number(text: str) -> float:
    # 1e999 is valid JSON, but Python reads it as inf and would write it back as
    # Infinity, which is not.
    number = float(text)
    if not math.isfinite(number):
        raise BadFrame(f"a presence state holds the number {text[:40]}, beyond a double")
    return number


def _check_presence_states(payload: bytes) -> None:
    """Refuse presence a browser could not read: every state must be strict JSON (no
    NaN or Infinity, which Python's json accepts and JavaScript's JSON.parse does not),
    and an object, or null for "gone". A payload that does not decode raises what
    pycrdt's decoder or json raises (ValueError, IndexError, RecursionError)."""
    decoder = Decoder(payload)
    for _ in range(decoder.read_var_uint()):
        decoder.read_var_uint()  # client id
        decoder.read_var_uint()  # clock
        text = decoder.read_var_string()
        if not text:
            continue
        state = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_number)
        if state is not None and not isinstance(state, dict):
            raise BadFrame("a presence state must be a JSON object or null")


class SeqTracker:
    """The highest log sequence number up to which this process has every update."""

    def __init__(self, watermark: int = 0) -> None:
        self.watermark = watermark
        self._ahead: dict[int, int] = {}

    def note(self, first: int, last: int) -> None:
        """Record that updates first..last are applied here."""
        if last <= self.watermark:
            return
        if first > self.watermark + 1:
            self._ahead[first] = max(last, self._ahead.get(first, 0))
            return
        self.watermark = last
        while self._ahead:
            reachable = [first for first in self._ahead if first <= self.watermark + 1]
            if not reachable:
                break
            for first in reachable:
                self.watermark = max(self.watermark, self._ahead.pop(first))


class Room:
    """The live state of one document in this process."""

    def __init__(self, doc_id: str, *, max_document_bytes: int) -> None:
        self.doc_id = doc_id
        self.max_document_bytes = max_document_bytes
        self.doc: Doc[Any] = Doc()
        self.awareness = Awareness(self.doc)
        # The server is not a participant: it must not show up as a phantom peer.
        self.awareness.set_local_state(None)
        self._awareness_subscription = self.awareness.observe(self._track_awareness_owner)
        self.peers: set[Peer] = set()
        self.holders = 0
        self.seq = SeqTracker()
        self.size_bytes = 0
        self._changes: list[bytes] = []
        self._doc_subscription = self.doc.observe(self._collect_change)
        # Joiners with an empty state all get the same frame: encode it once per change.
        self._full_state_frame: bytes | None = None
        # A client's refused update may have left part of itself in the Doc (see
        # apply_update): nobody may read the Doc until it is rebuilt from the store.
        self.damaged = False

    def close(self) -> None:
        """Drop the callbacks the Rust side holds; without this an unloaded room never dies."""
        self.doc.unobserve(self._doc_subscription)
        self.awareness.unobserve(self._awareness_subscription)
        self.peers.clear()

    # Document updates -----------------------------------------------------------------

    def _collect_change(self, event: TransactionEvent) -> None:
        self._changes.append(event.update)

    def apply_update(self, update: bytes, *, from_client: bool = True) -> bytes | None:
        """Apply an update and return what it changed, or None when it changed nothing.

        yrs keeps what of an update depends on changes the Doc lacks inside it, out of
        sight (not in its state vector, no change event), and takes it in with the update
        that completes it. For durable updates (`from_client=False`: loaded, healed, or
        from another process) that is what must happen: what they wait for was stored
        first and is on its way. A client's update, though, must apply whole: what waits
        would be neither stored nor relayed, escapes every limit, and yrs does not keep
        it reliably (some of it shows in the document, some makes encoding panic). So
        when part of a client's update waits, UpdateWaits is raised and `damaged` is set;
        likewise, with BadUpdate, when yrs refuses a client's update after keeping part
        of it, or panics. Nothing of such an update may be kept: the Doc must be rebuilt
        from the store (`replace_doc`) before anyone reads it again.

        When yrs refuses an update without keeping any of it waiting, BadUpdate carries
        the part it did integrate (`partial`), which must be stored and relayed like any
        change: yrs cannot roll it back.
        """
        if update == _EMPTY_UPDATE:
            return None
        if from_client and self.size_bytes + len(update) > self.max_document_bytes:
            raise TooLarge(f"document would exceed {self.max_document_bytes} bytes")
        _check_client_count(update)
        self._changes.clear()
        try:
            self.doc.apply_update(update)
        except BaseException as error:
            if not contain_yrs_errors(error):
                raise
            partial = self._take_change()
            if from_client and (_is_panic(error) or self._waiting_part(update) is not None):
                self.damaged = True
                partial = None
            raise BadUpdate("the update is not a valid Yjs update", partial=partial) from None
        change = self._take_change()
        if from_client and self._waiting_part(update) is not None:
            self.damaged = True
            raise UpdateWaits("the update depends on changes this server does not have")
        return change

    def _waiting_part(self, update: bytes) -> bytes | None:
        try:
            return waiting_part(update, self.doc.get_state())
        except BaseException as error:
            if not contain_yrs_errors(error):
                raise
            return None  # the update does not even decode: yrs applied none of it

    def replace_doc(self, stored: bytes | None) -> bool:
        """Start over from the stored document, dropping whatever the old Doc held back.

        Returns False when yrs could not apply all of it: the Doc then holds what it
        could, which is what every process serves. Peers, presence and the awareness
        object stay; the caller brings the sequence tracker and size up to what it read.
        """
        self.doc.unobserve(self._doc_subscription)
        self.doc = Doc(client_id=self.doc.client_id)
        self._doc_subscription = self.doc.observe(self._collect_change)
        self._full_state_frame = None
        self.damaged = False
        whole = True
        if stored is not None:
            try:
                self.doc.apply_update(stored)
            except BaseException as error:
                if not contain_yrs_errors(error):
                    raise
                whole = False
        self._changes.clear()
        return whole

    def _take_change(self) -> bytes | None:
        changes = [change for change in self._changes if change != _EMPTY_UPDATE]
        self._changes.clear()
        if not changes:
            return None
        self._full_state_frame = None
        return changes[0] if len(changes) == 1 else merge_updates(*changes)

    def sync_step2(self, state_vector: bytes) -> bytes:
        """The SyncStep2 frame answering a peer's state vector."""
        if state_vector == _EMPTY_STATE_VECTOR:
            if self._full_state_frame is None:
                self._full_state_frame = sync_step2_frame(self.doc.get_update())
            return self._full_state_frame
        try:
            return sync_step2_frame(self.doc.get_update(state_vector))
        except BaseException as error:
            if not contain_yrs_errors(error):
                raise
            raise BadFrame("the state vector does not decode") from None

    def greeting(self) -> list[bytes]:
        """Frames a new peer receives first: our state vector and everyone's presence."""
        frames = [sync_step1_frame(self.doc.get_state())]
        awareness = self.awareness_snapshot()
        if awareness is not None:
            frames.append(awareness)
        return frames

    # Awareness ------------------------------------------------------------------------

    def _track_awareness_owner(self, topic: str, payload: tuple[dict[str, Any], Any]) -> None:
        # Remember which awareness client ids each local peer speaks for, so their
        # states can be removed for everyone when that peer disconnects.
        changes, origin = payload
        if topic != "update" or origin is None or not hasattr(origin, "awareness_ids"):
            return
        origin.awareness_ids.update(changes["added"], changes["updated"])
        origin.awareness_ids.difference_update(changes["removed"])

    def apply_awareness(self, payload: bytes, origin: Peer | None) -> None:
        """Apply an awareness update from a local peer (origin) or another process (None)."""
        try:
            _check_presence_states(payload)
            self.awareness.apply_awareness_update(payload, origin)
        except (ValueError, IndexError, RuntimeError, TypeError, KeyError) as error:
            raise BadFrame(f"awareness update does not decode ({type(error).__name__})") from None

    def awareness_snapshot(self) -> bytes | None:
        """An awareness frame with every known state, or None when nobody is present."""
        client_ids = list(self.awareness.states)
        if not client_ids:
            return None
        return awareness_frame(self.awareness.encode_awareness_update(client_ids))

    def local_awareness(self) -> bytes | None:
        """An awareness payload with the states of this process's own peers, if any."""
        client_ids = [
            client_id
            for peer in self.peers
            for client_id in peer.awareness_ids
            if client_id in self.awareness.states
        ]
        if not client_ids:
            return None
        return self.awareness.encode_awareness_update(client_ids)

    def forget_awareness(self, client_ids: set[int]) -> bytes | None:
        """Remove states (of a departed peer); return the payload announcing it, if any."""
        present = [client_id for client_id in client_ids if client_id in self.awareness.states]
        if not present:
            return None
        self.awareness.remove_awareness_states(present, None)
        return self.awareness.encode_awareness_update(present)

    # Peers ----------------------------------------------------------------------------

    def add_peer(self, peer: Peer) -> None:
        """Start fanning out to `peer`."""
        self.peers.add(peer)

    def remove_peer(self, peer: Peer) -> bytes | None:
        """Stop fanning out to `peer`; return the awareness payload removing its states."""
        self.peers.discard(peer)
        # A client that reconnected may already speak for the same ids on a new socket.
        still_here = {client_id for other in self.peers for client_id in other.awareness_ids}
        payload = self.forget_awareness(peer.awareness_ids - still_here)
        peer.awareness_ids.clear()
        if payload is not None:
            self.broadcast(awareness_frame(payload))
        return payload

    def broadcast(self, frame: bytes, exclude: Peer | None = None) -> None:
        """Send the same frame object to every local peer except `exclude`."""
        for peer in self.peers:
            if peer is not exclude:
                peer.send(frame)
