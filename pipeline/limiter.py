"""The send-rate limiter: never more than `rate` calls in any rolling second.

Two rules, applied at two places:
- `pace()`, in the sender's dispatcher: GCRA spreads sends evenly, with a small burst
  allowance so a late wake-up can catch up, which keeps the mean rate at the target;
- `admit()`, at the wire (botocore's `before-send` hook, or just before the outbox
  writes): a sliding log of send times caps every rolling window. This is the hard
  promise. It sits at the wire because a call paced at t can leave later than t (the
  event loop was busy), and calls delayed together would arrive together. A token
  bucket alone would let 2x the rate through a window that straddles a refill.

AIMD: a throttle from SES (another sender shares the account) cuts the rate
multiplicatively, at most once per second; each quiet second adds back a slice of
the ceiling. Pure: every method takes `now` (seconds, monotonic).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

# Arrival at SES trails our wire stamp by a jittery few ms (network, scheduling); the
# 30 ms margin absorbs it at a cost of ~3 % of the mean rate (measured: bench/rate.py).
WINDOW_S = 1.03
# Catch-up allowed after a late wake-up, in seconds' worth of sends. Small on purpose:
# a burst after an idle spell opens many connections at once and arrives bunched.
CATCH_UP_S = 0.02
DECREASE_FACTOR = 0.7
INCREASE_FRACTION = 0.05
MIN_RATE_PER_S = 0.1


class RateLimiter:
    """Paces one consumer (the sender's dispatcher) to `rate` calls per second."""

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        self.ceiling = rate_per_s
        self.rate = rate_per_s
        self.clock = clock
        self._sent: deque[float] = deque()
        self._tat = 0.0  # GCRA's theoretical arrival time
        self._last_change = -math.inf
        self.throttles = 0

    @property
    def per_window(self) -> int:
        return max(1, math.floor(self.rate))

    def pace_delay_s(self, now: float) -> float:
        """GCRA: how long until the next send is due for an even rate (0: now)."""
        return max(self._tat - self._tolerance_s() - now, 0.0)

    def _tolerance_s(self) -> float:
        return max(0.0, self.rate * CATCH_UP_S - 1) / self.rate

    def window_delay_s(self, now: float) -> float:
        """Sliding log: how long until a send keeps every rolling window within the rate."""
        while self._sent and now - self._sent[0] >= WINDOW_S:
            self._sent.popleft()
        if len(self._sent) < self.per_window:
            return 0.0
        return max(self._sent[-self.per_window] + WINDOW_S - now, 0.0)

    def delay_s(self, now: float) -> float:
        """Both rules at one point in time (for tests and single-place callers)."""
        return max(self.pace_delay_s(now), self.window_delay_s(now))

    def take(self, now: float) -> None:
        """Record a send at `now` against both rules."""
        self.take_pace(now)
        self._sent.append(now)

    def take_pace(self, now: float) -> None:
        # After an idle spell start evenly paced: no saved-up burst (GCRA's TAT restarts at now).
        idle = self._tat < now - self._tolerance_s()
        self._tat = (now + self._tolerance_s() if idle else self._tat) + 1.0 / self.rate

    async def pace(self) -> None:
        """Wait until the next send is due (the dispatcher's rule)."""
        while (wait := self.pace_delay_s(self.clock())) > 0:
            await asyncio.sleep(wait)
        self.take_pace(self.clock())

    async def admit(self) -> None:
        """Wait until this send keeps every rolling window within the rate, then log it."""
        while (wait := self.window_delay_s(self.clock())) > 0:
            await asyncio.sleep(wait)
        self._sent.append(self.clock())

    def on_throttled(self, now: float) -> None:
        """SES said we are too fast: multiplicative decrease, once per second at most."""
        self.throttles += 1
        if now - self._last_change < 1.0:
            return
        self.rate = max(MIN_RATE_PER_S, self.rate * DECREASE_FACTOR)
        self._last_change = now

    def on_success(self, now: float) -> None:
        """Additive increase toward the ceiling, a slice per quiet second."""
        if self.rate >= self.ceiling or now - self._last_change < 1.0:
            return
        self.rate = min(self.ceiling, self.rate + max(self.ceiling * INCREASE_FRACTION, MIN_RATE_PER_S))
        self._last_change = now
