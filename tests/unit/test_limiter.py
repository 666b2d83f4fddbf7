"""The rate limiter under a fake clock: the rolling-window cap, the mean, AIMD."""

from __future__ import annotations

import bisect
import random

import pytest

from pipeline.limiter import WINDOW_S, RateLimiter


def simulate(rate: float, seconds: float, seed: int = 1) -> list[float]:
    """Send as fast as the limiter allows, with a jittery event loop."""
    limiter = RateLimiter(rate, clock=lambda: 0.0)
    rng = random.Random(seed)
    now, sends = 0.0, []
    while now < seconds:
        wait = limiter.delay_s(now)
        if wait <= 0:
            limiter.take(now)
            sends.append(now)
            now += rng.uniform(0, 0.3 / rate)
        else:
            now += wait + rng.uniform(0, 0.002)  # a late wake-up
    return sends


def max_in_any_second(sends: list[float]) -> int:
    return max(bisect.bisect_left(sends, s + 1.0) - i for i, s in enumerate(sends))


@pytest.mark.parametrize("rate", [1, 14, 100, 1000])
def test_no_rolling_second_exceeds_the_rate_and_the_mean_is_close(rate: int) -> None:
    sends = simulate(rate, 20)
    assert max_in_any_second(sends) <= rate
    assert len(sends) / 20 >= rate * 0.97


def test_a_token_bucket_would_have_allowed_twice_the_rate() -> None:
    # The reason for the sliding log: bursts at a window edge are what it stops.
    limiter = RateLimiter(10, clock=lambda: 0.0)
    sent = 0
    for step in range(200):
        now = step * 0.01
        if limiter.delay_s(now) == 0:
            limiter.take(now)
            sent += 1
    assert sent <= 10 * (2.0 / WINDOW_S) + 1


def test_throttling_halves_toward_a_floor_and_quiet_seconds_climb_back() -> None:
    limiter = RateLimiter(100, clock=lambda: 0.0)
    limiter.on_throttled(10.0)
    limiter.on_throttled(10.1)  # the same burst: counted once
    assert limiter.rate == pytest.approx(70)
    limiter.on_throttled(11.5)
    assert limiter.rate == pytest.approx(49)
    for second in range(13, 40):
        limiter.on_success(float(second))
    assert limiter.rate == pytest.approx(100)
    assert limiter.throttles == 3


def test_zero_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
