"""Rendezvous hashing: deterministic, balanced, and minimal movement on membership changes."""

from __future__ import annotations

from collections import Counter

import pytest
from gateway.hashing import choose, rank

NODES = [f"http://10.0.0.{i}:8001" for i in range(1, 5)]
KEYS = [f"doc-{i}" for i in range(2000)]


def _owners(nodes: list[str]) -> dict[str, str | None]:
    return {key: choose(key, nodes) for key in KEYS}


def test_choose_is_deterministic_and_ignores_node_order() -> None:
    for key in KEYS[:200]:
        first = choose(key, NODES)
        assert choose(key, NODES) == first
        assert choose(key, list(reversed(NODES))) == first


def test_rank_is_deterministic_and_ignores_node_order() -> None:
    for key in KEYS[:200]:
        assert rank(key, NODES) == rank(key, NODES)
        assert rank(key, list(reversed(NODES))) == rank(key, NODES)


def test_rank_lists_every_node_once_with_the_chosen_node_first() -> None:
    for key in KEYS[:500]:
        ranked = rank(key, NODES)
        assert sorted(ranked) == sorted(NODES)
        assert ranked[0] == choose(key, NODES)


def test_rank_falls_back_to_the_owner_among_the_remaining_nodes() -> None:
    # The second choice is who would own the key if the first one left.
    for key in KEYS[:500]:
        ranked = rank(key, NODES)
        remaining = [node for node in NODES if node != ranked[0]]
        assert ranked[1] == choose(key, remaining)


def test_different_keys_have_different_owners() -> None:
    assert len(set(_owners(NODES).values())) == len(NODES)


def test_keys_spread_evenly_over_four_nodes() -> None:
    counts = Counter(_owners(NODES).values())

    assert set(counts) == set(NODES)
    for node, count in counts.items():
        assert 0.15 * len(KEYS) <= count <= 0.35 * len(KEYS), (node, count)


@pytest.mark.parametrize("removed", NODES)
def test_removing_a_node_moves_only_the_keys_it_owned(removed: str) -> None:
    before = _owners(NODES)
    after = _owners([node for node in NODES if node != removed])

    moved = {key for key in KEYS if before[key] != after[key]}

    assert moved == {key for key in KEYS if before[key] == removed}
    assert removed not in after.values()


def test_adding_a_node_moves_keys_only_to_the_new_node() -> None:
    new = "http://10.0.0.9:8001"
    before = _owners(NODES)
    after = _owners([*NODES, new])

    moved = [key for key in KEYS if before[key] != after[key]]

    assert moved, "the new node owns no key"
    assert all(after[key] == new for key in moved)
    # And it takes roughly its share, not everything.
    assert len(moved) <= 0.35 * len(KEYS)


def test_choose_of_no_nodes_is_none() -> None:
    assert choose("doc-1", []) is None
    assert rank("doc-1", []) == []


def test_a_single_node_owns_every_key() -> None:
    assert {choose(key, NODES[:1]) for key in KEYS[:100]} == {NODES[0]}
