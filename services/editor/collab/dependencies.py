"""Did a Doc take in all of an update, or is part of it waiting for changes it lacks?

yrs integrates what it can of an update and keeps the rest inside the Doc, out of
sight: structs whose predecessors or neighbours are missing, and deletions of items it
does not have yet. Nothing reports them (no change event, not in the encoded state),
yet they take memory and may surface later. This module finds them from the outside,
with pycrdt's own encoding: what of the update the Doc's new state vector still does
not cover.
"""

from __future__ import annotations

from pycrdt import Decoder, get_update


def _clocks(state_vector: bytes) -> dict[int, int]:
    """client id -> the next clock the Doc expects from it."""
    decoder = Decoder(state_vector)
    return {
        decoder.read_var_uint(): decoder.read_var_uint() for _ in range(decoder.read_var_uint())
    }


def waiting_part(update: bytes, state_vector: bytes) -> bytes | None:
    """What of `update` a Doc whose state vector (after applying it) is `state_vector`
    does not hold: structs and deletions that wait inside it. None when nothing waits.

    The part returned is itself an update: checked again later against a newer state
    vector, it tells whether what waited has been taken in since. Both inputs come from
    yrs (the update has just been decoded by it), so they are well-formed.
    """
    rest = get_update(update, state_vector)
    decoder = Decoder(rest)
    if decoder.read_var_uint():  # structs the state does not cover: they wait
        return rest
    deleting = decoder.read_var_uint()
    if not deleting:
        return None
    clocks = _clocks(state_vector)
    # The delete set: per client, ranges (clock, length). A range beyond what the Doc
    # has deletes items it does not hold yet; yrs keeps it waiting for them.
    for _ in range(deleting):
        client = decoder.read_var_uint()
        known = clocks.get(client, 0)
        for _ in range(decoder.read_var_uint()):
            clock = decoder.read_var_uint()
            length = decoder.read_var_uint()
            if clock + length > known:
                return rest
    return None
