"""The rate limiter under a fake clock: the rolling-window cap, the mean, AIMD."""

from __future__ import annotations

import bisect
import random
from types import SimpleNamespace

import pytest

from pipeline import limiter as limiter_module
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


class FakeTime:
    """A clock that moves only when the limiter sleeps; every wait is recorded and must be positive."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a wait of zero would spin the event loop"
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime(now=100.0)
    monkeypatch.setattr(limiter_module, "asyncio", SimpleNamespace(sleep=fake.sleep))
    return fake


async def test_pace_spreads_sends_one_interval_apart(fake_time: FakeTime) -> None:
    limiter = RateLimiter(10, clock=fake_time.clock)
    for _ in range(3):
        await limiter.pace()
    assert fake_time.waits == pytest.approx([0.1, 0.1])


async def test_admit_waits_for_room_in_the_window_and_logs_the_send_when_it_leaves(fake_time: FakeTime) -> None:
    limiter = RateLimiter(2, clock=fake_time.clock)
    await limiter.admit()
    await limiter.admit()
    assert fake_time.waits == []
    fake_time.now += 0.5
    await limiter.admit()  # the window that began at 100.0 is full until 101.03
    await limiter.admit()  # room again: the first two have left the window
    await limiter.admit()  # full until the third's own window (logged at 101.03, not 100.5) ends
    assert fake_time.waits == pytest.approx([WINDOW_S - 0.5, WINDOW_S])


async def test_a_send_restamped_when_it_was_written_holds_its_room_from_then(fake_time: FakeTime) -> None:
    limiter = RateLimiter(1, clock=fake_time.clock)
    sent = await limiter.admit()  # admitted at 100.0...
    fake_time.now += 0.2
    limiter.restamp(sent)  # ...and its bytes left at 100.2 (it waited for a connection)
    # The window it holds ends a full window after it was written, not after it was admitted
    assert limiter.window_delay_s(100.0 + WINDOW_S, 1) == pytest.approx(0.2)
    assert limiter.window_delay_s(100.2 + WINDOW_S, 1) == 0.0


def test_a_restamp_never_moves_a_send_earlier() -> None:
    now = [5.0]
    limiter = RateLimiter(1, clock=lambda: now[0])
    limiter.take(5.0)
    entry = limiter._sent[0]
    now[0] = 4.0
    limiter.restamp(entry)
    assert entry.at == 5.0


def test_after_an_idle_spell_the_next_send_waits_a_full_interval() -> None:
    # No saved-up burst: at 100/s the allowance is one send, and it does not survive idleness.
    limiter = RateLimiter(100)
    limiter.take_pace(0.0)
    limiter.take_pace(5.0)
    assert limiter.pace_delay_s(5.0) == pytest.approx(0.01)


def test_a_late_wake_up_catches_up_by_one_send_at_100_per_s() -> None:
    limiter = RateLimiter(100)
    limiter.take_pace(5.0)  # the next send is due at 5.01
    # When the dispatcher wakes 10 ms late, then one extra send may leave at once, and no more
    for _ in range(2):
        assert limiter.pace_delay_s(5.02) == pytest.approx(0.0, abs=1e-9)
        limiter.take_pace(5.02)
    assert limiter.pace_delay_s(5.02) == pytest.approx(0.01)


def test_at_10_per_s_there_is_no_catch_up_burst() -> None:
    limiter = RateLimiter(10)
    limiter.take_pace(0.0)
    assert limiter.pace_delay_s(0.05) == pytest.approx(0.05)


def test_each_quiet_second_adds_back_five_percent_of_the_ceiling() -> None:
    limiter = RateLimiter(100)
    limiter.on_throttled(0.0)
    rates = []
    for second in range(1, 8):
        limiter.on_success(float(second))
        rates.append(limiter.rate)
    assert rates == pytest.approx([75, 80, 85, 90, 95, 100, 100])


def test_successes_within_a_second_of_a_change_leave_the_rate_alone() -> None:
    limiter = RateLimiter(100)
    limiter.on_throttled(10.0)
    limiter.on_success(10.5)
    assert limiter.rate == pytest.approx(70)
    limiter.on_success(11.0)
    limiter.on_success(11.5)
    assert limiter.rate == pytest.approx(75)


def test_throttles_a_second_apart_cut_twice() -> None:
    limiter = RateLimiter(100)
    limiter.on_throttled(10.0)
    limiter.on_throttled(11.0)
    assert limiter.rate == pytest.approx(49)


def test_successes_at_the_ceiling_do_not_delay_the_next_cut() -> None:
    limiter = RateLimiter(100)
    limiter.on_success(5.0)
    limiter.on_throttled(5.5)
    assert limiter.rate == pytest.approx(70)


# --- bulk calls: the limiter counts recipients, not calls -------------------------------------


def simulate_bulk(rate: float, seconds: float, most: int = 50, seed: int = 1) -> list[tuple[float, int]]:
    """A backlog sent in calls as large as the limiter allows, with a jittery event loop."""
    limiter = RateLimiter(rate, clock=lambda: 0.0)
    rng = random.Random(seed)
    now, calls = 0.0, []
    while now < seconds:
        n = limiter.batch_size(most)
        wait = limiter.delay_s(now, n)
        if wait <= 0:
            limiter.take(now, n)
            calls.append((now, n))
            now += rng.uniform(0, 0.3 * n / rate)
        else:
            now += wait + rng.uniform(0, 0.002)
    return calls


def most_recipients_in_any_second(calls: list[tuple[float, int]]) -> int:
    return max(sum(n for t, n in calls if start <= t < start + 1.0) for start, _ in calls)


@pytest.mark.parametrize(("rate", "size"), [(1, 1), (14, 1), (100, 5), (1000, 50), (5000, 50)])
def test_a_call_carries_fifty_milliseconds_of_the_rate_at_most_fifty(rate: int, size: int) -> None:
    assert RateLimiter(rate).batch_size(50) == size
    assert RateLimiter(rate).batch_size(3) == min(3, size)


@pytest.mark.parametrize("rate", [14, 100, 1000, 5000])
def test_with_bulk_calls_no_rolling_second_carries_more_recipients_than_the_rate(rate: int) -> None:
    calls = simulate_bulk(rate, 10)
    assert most_recipients_in_any_second(calls) <= rate
    assert sum(n for _, n in calls) / 10 >= rate * 0.95
    if rate >= 1000:
        assert all(n == 50 for _, n in calls), "a backlog goes out in full calls"


def test_a_call_waits_until_the_window_has_room_for_all_its_recipients() -> None:
    limiter = RateLimiter(100)
    limiter.take(0.0, 60)
    assert limiter.window_delay_s(0.5, 40) == 0.0
    limiter.take(0.5, 30)
    # 90 in the window: 20 more fit only once the 60 sent at 0.0 have left it
    assert limiter.window_delay_s(0.6, 20) == pytest.approx(WINDOW_S - 0.6)
    assert limiter.window_delay_s(0.6, 10) == 0.0


def test_a_call_made_up_before_a_throttle_cut_leaves_alone_in_an_empty_window() -> None:
    limiter = RateLimiter(20)
    limiter.take(0.0, 1)
    limiter.on_throttled(0.0)  # 20/s -> 14/s: a call of 20 made up before now exceeds a window
    assert limiter.window_delay_s(0.1, 20) == pytest.approx(WINDOW_S - 0.1)
    assert limiter.window_delay_s(WINDOW_S, 20) == 0.0
