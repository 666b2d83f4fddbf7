"""The send-rate limiter: never more than `rate` calls in any rolling second.

Two rules together:
- a sliding log of send times caps every rolling window (the hard promise; a token
  bucket alone lets 2x the rate through a window that straddles a refill);
- GCRA pacing spreads sends evenly, with a small burst allowance so a late wake-up
  can catch up, which keeps the achieved mean rate at the target.

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

# Arrival at SES trails our timestamp by a jittery few ms; the margin absorbs it.
WINDOW_S = 1.015
BURST_FRACTION = 0.1
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

    def delay_s(self, now: float) -> float:
        """How long until the next send may go (0: now)."""
        while self._sent and now - self._sent[0] >= WINDOW_S:
            self._sent.popleft()
        window_wait = 0.0
        if len(self._sent) >= self.per_window:
            window_wait = self._sent[-self.per_window] + WINDOW_S - now
        interval = 1.0 / self.rate
        tolerance = max(0.0, self.rate * BURST_FRACTION - 1) * interval
        pace_wait = self._tat - tolerance - now
        return max(window_wait, pace_wait, 0.0)

    def take(self, now: float) -> None:
        """Record a send at `now` (call only when delay_s(now) == 0)."""
        self._sent.append(now)
        self._tat = max(self._tat, now) + 1.0 / self.rate

    async def acquire(self) -> None:
        """Wait for, and take, the next send slot."""
        while True:
            now = self.clock()
            wait = self.delay_s(now)
            if wait <= 0:
                self.take(now)
                return
            await asyncio.sleep(wait)

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
