"""Hand-built Yjs updates the engine (yrs) mishandles, for the tests that feed them to a room."""

from __future__ import annotations

# Client 7 inserts "B" at clock 1 (clock 0 missing), then an item of client 1 whose parent
# is a character: yrs refuses the update, yet "B" ends up in the document.
REFUSED_UPDATE_WITH_A_WAITING_STRUCT = bytes.fromhex(
    "02"  # two clients
    " 01 07 01"  # client 7: one struct, starting at clock 1
    " 04 01 04 74657874 01 42"  # string item, parent: root "text", content "B"
    " 01 01 05"  # client 1: one struct, starting at clock 5
    " 08 00 01 01 01 7d 01"  # any item, parent: id 1#1 (a character), content [1]
    " 00"  # empty delete set
)
