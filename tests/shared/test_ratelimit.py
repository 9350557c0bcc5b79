"""The message-rate token bucket both the gateway and the editor use per connection."""

from __future__ import annotations

from collab_common.ratelimit import TokenBucket

from tests.support.clock import FakeClock


def _bucket(rate: float, burst: int) -> tuple[TokenBucket, FakeClock]:
    bucket = TokenBucket(rate, burst)
    clock = FakeClock()
    bucket._now = clock
    bucket.updated = clock()
    return bucket, clock


def _take_all(bucket: TokenBucket, limit: int = 10_000) -> int:
    taken = 0
    while taken < limit and bucket.take():
        taken += 1
    return taken


def test_bucket_allows_a_burst_at_once_then_refuses() -> None:
    bucket, _ = _bucket(rate=4, burst=10)

    assert [bucket.take() for _ in range(10)] == [True] * 10
    assert bucket.take() is False
    assert bucket.take() is False


def test_bucket_refills_at_the_rate() -> None:
    bucket, clock = _bucket(rate=4, burst=10)
    _take_all(bucket)

    clock.advance(0.25)  # one token
    assert bucket.take() is True
    assert bucket.take() is False

    clock.advance(1.0)  # four tokens
    assert _take_all(bucket) == 4


def test_bucket_does_not_refill_without_time_passing() -> None:
    bucket, _ = _bucket(rate=1000, burst=3)
    _take_all(bucket)

    assert bucket.take() is False


def test_partial_tokens_accumulate_across_calls() -> None:
    bucket, clock = _bucket(rate=4, burst=10)
    _take_all(bucket)

    clock.advance(0.125)  # half a token
    assert bucket.take() is False
    clock.advance(0.125)  # the other half
    assert bucket.take() is True


def test_bucket_never_holds_more_than_burst_after_a_long_idle() -> None:
    bucket, clock = _bucket(rate=4, burst=10)
    _take_all(bucket)

    clock.advance(3600)

    assert _take_all(bucket) == 10


def test_refused_take_does_not_spend_a_token() -> None:
    bucket, clock = _bucket(rate=4, burst=2)
    _take_all(bucket)
    for _ in range(5):
        assert bucket.take() is False

    clock.advance(0.5)  # two tokens

    assert _take_all(bucket) == 2


def test_bucket_uses_the_real_clock_by_default() -> None:
    bucket = TokenBucket(rate=0.001, burst=2)

    assert _take_all(bucket) == 2
