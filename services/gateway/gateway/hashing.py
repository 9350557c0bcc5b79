"""Rendezvous (highest-random-weight) hashing: each document's preferred upstream.

When an upstream joins or leaves, only the documents whose winner changes move;
every other document keeps its upstream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _weight(node: str, key: str) -> int:
    digest = hashlib.blake2b(f"{node}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(key: str, nodes: Sequence[str]) -> list[str]:
    """All nodes, best first, for `key`: the first is the affine one, the rest fall-backs."""
    return sorted(nodes, key=lambda node: _weight(node, key), reverse=True)


def choose(key: str, nodes: Sequence[str]) -> str | None:
    """The node that owns `key`, or None when there are no nodes."""
    if not nodes:
        return None
    return max(nodes, key=lambda node: _weight(node, key))
