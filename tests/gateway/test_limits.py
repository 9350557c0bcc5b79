"""Per-address connection counts (the token bucket is tested in tests/shared)."""

from __future__ import annotations

from gateway.limits import AddressLimiter


def test_limiter_acquires_up_to_the_limit_then_refuses() -> None:
    limiter = AddressLimiter(limit=3)

    assert [limiter.acquire("10.0.0.1") for _ in range(3)] == [True] * 3
    assert limiter.acquire("10.0.0.1") is False
    assert limiter.count("10.0.0.1") == 3  # the refusal counted nothing


def test_limiter_counts_addresses_independently() -> None:
    limiter = AddressLimiter(limit=2)
    limiter.acquire("10.0.0.1")
    limiter.acquire("10.0.0.1")

    assert limiter.acquire("10.0.0.2") is True
    assert limiter.acquire("10.0.0.2") is True
    assert limiter.acquire("10.0.0.2") is False
    assert limiter.count("10.0.0.1") == 2
    assert limiter.count("10.0.0.2") == 2


def test_release_frees_a_slot() -> None:
    limiter = AddressLimiter(limit=2)
    limiter.acquire("10.0.0.1")
    limiter.acquire("10.0.0.1")

    limiter.release("10.0.0.1")

    assert limiter.count("10.0.0.1") == 1
    assert limiter.acquire("10.0.0.1") is True
    assert limiter.acquire("10.0.0.1") is False


def test_count_returns_to_zero_after_every_release() -> None:
    limiter = AddressLimiter(limit=5)
    for _ in range(4):
        limiter.acquire("10.0.0.1")
    assert limiter.count("10.0.0.1") == 4

    for expected in (3, 2, 1, 0):
        limiter.release("10.0.0.1")
        assert limiter.count("10.0.0.1") == expected

    assert limiter.count("never-seen") == 0
    assert limiter.acquire("10.0.0.1") is True


def test_count_of_an_unknown_address_is_zero_and_records_nothing() -> None:
    limiter = AddressLimiter(limit=1)

    assert limiter.count("10.0.0.9") == 0
    assert limiter.acquire("10.0.0.9") is True
