from __future__ import annotations

from connector.breaker import Breaker
from connector.ratelimit import RateLimiter, TokenBucket


def test_breaker_holds_while_bad_records_are_a_minority() -> None:
    b = Breaker(window=100, max_share=0.5, max_consecutive=0)
    for _ in range(50):
        assert b.record(ok=9, dead=1) is None
    assert b.tripped is None


def test_breaker_trips_when_most_recent_records_are_dead() -> None:
    b = Breaker(window=100, max_share=0.5, max_consecutive=0)
    for _ in range(20):
        b.record(ok=10, dead=0)
    assert b.record(ok=20, dead=30) is None  # 30 of the last 100 only
    reason = None
    for _ in range(5):
        reason = reason or b.record(ok=2, dead=8)
    assert reason is not None and "of the last" in reason


def test_breaker_trips_on_a_run_of_dead_letters() -> None:
    b = Breaker(window=10_000, max_share=1.0, max_consecutive=50)
    assert b.record(ok=0, dead=30) is None
    assert b.record(ok=1, dead=5) is None  # an accepted record breaks the run
    assert b.record(ok=0, dead=30) is None
    assert b.record(ok=0, dead=20) == "55 records in a row were dead-lettered"


def test_token_bucket_spaces_requests_at_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=1)
    assert bucket.reserve(1, now=0.0) == 0.0
    assert abs(bucket.reserve(1, now=0.0) - 0.1) < 1e-9
    assert abs(bucket.reserve(1, now=0.0) - 0.2) < 1e-9
    assert bucket.reserve(1, now=1.0) == 0.0


def test_rate_limiter_takes_the_stricter_ceiling() -> None:
    t = [0.0]
    limiter = RateLimiter(requests_per_s=100, profiles_per_s=1000, clock=lambda: t[0])
    assert limiter.delay(1000) == 0.0
    assert abs(limiter.delay(500) - 0.5) < 1e-9  # profiles, not requests, bind here
    assert not RateLimiter(None, None).active
