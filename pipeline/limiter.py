"""The send-rate limiter: never more than `rate` recipients in any rolling second.

It counts recipients, not calls: a SendBulkEmail call of 50 spends 50 (`n` below).
Two rules, applied at two places:
- `pace()`, in the sender's dispatcher: GCRA spreads sends evenly, with a small burst
  allowance so a late wake-up can catch up, which keeps the mean rate at the target;
- `admit(n)`, at the wire (botocore's `before-send` hook, or just before the outbox
  writes): a sliding log of send times and counts caps every rolling window. This is the hard
  promise. It sits at the wire because a call paced at t can leave later than t (the
  event loop was busy), and calls delayed together would arrive together. A token
  bucket alone would let 2x the rate through a window that straddles a refill.
  `restamp(entry)` moves a send's log entry to when its bytes were written (aiohttp's
  chunk-sent trace, pipeline/wire_stamp.py), which is later when the request waited
  for a connection: the window counts from there.

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
from dataclasses import dataclass

# Arrival at SES trails the moment the request's bytes were written by a jittery few ms
# (network, the receiver's scheduling); the 10 ms margin absorbs it at a cost of ~1 % of
# the mean rate. Measured on loopback under load (bench/rate.py): 1.00 s let 1.05-1.07 of
# the rate into a rolling second, 1.01 s kept every case at 1.000.
WINDOW_S = 1.01
# Catch-up allowed after a late wake-up, in seconds' worth of sends. Small on purpose:
# a burst after an idle spell opens many connections at once and arrives bunched.
CATCH_UP_S = 0.02
DECREASE_FACTOR = 0.7
INCREASE_FRACTION = 0.05
MIN_RATE_PER_S = 0.1
# A bulk call carries this many seconds' worth of the rate (50 at 1,000/s, 1 at 14/s): enough
# to spread the per-call cost, little enough that a call's recipients leave close to due.
BATCH_SPAN_S = 0.05


@dataclass(slots=True)
class LogEntry:
    """One send in the sliding log: when it counts from, and how many recipients it carried.
    Mutable, so `restamp` can move it to when the request was written."""

    at: float
    n: int


class RateLimiter:
    """Paces one consumer (the sender's dispatcher) to `rate` calls per second."""

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        self.ceiling = rate_per_s
        self.rate = rate_per_s
        self.clock = clock
        # The sends in the window (in send order; `restamp` can move one later than the
        # next), and the recipients they carried.
        self._sent: deque[LogEntry] = deque()
        self._in_window = 0
        self._tat = 0.0  # GCRA's theoretical arrival time
        self._last_change = -math.inf
        self.throttles = 0

    @property
    def per_window(self) -> int:
        return max(1, math.floor(self.rate))

    def batch_size(self, most: int) -> int:
        """How many recipients one call may carry at the current rate: BATCH_SPAN_S of it,
        at least 1, at most `most` and never more than one window allows."""
        return max(1, min(most, self.per_window, math.floor(self.rate * BATCH_SPAN_S)))

    def pace_delay_s(self, now: float) -> float:
        """GCRA: how long until the next send is due for an even rate (0: now)."""
        return max(self._tat - self._tolerance_s() - now, 0.0)

    def _tolerance_s(self) -> float:
        return max(0.0, self.rate * CATCH_UP_S - 1) / self.rate

    def window_delay_s(self, now: float, n: int = 1) -> float:
        """Sliding log: how long until a send of `n` keeps every rolling window within the rate."""
        while self._sent and now - self._sent[0].at >= WINDOW_S:
            self._in_window -= self._sent.popleft().n
        excess = self._in_window + min(n, self.per_window) - self.per_window
        if excess <= 0:
            return 0.0
        # Wait until the oldest sends that make room have left the window (entries leave in
        # log order, so the latest stamp among them decides).
        latest = -math.inf
        for entry in self._sent:
            latest = max(latest, entry.at)
            excess -= entry.n
            if excess <= 0:
                break
        return max(latest + WINDOW_S - now, 0.0)

    def delay_s(self, now: float, n: int = 1) -> float:
        """Both rules at one point in time (for tests and single-place callers)."""
        return max(self.pace_delay_s(now), self.window_delay_s(now, n))

    def take(self, now: float, n: int = 1) -> None:
        """Record a send of `n` recipients at `now` against both rules."""
        self.take_pace(now, n)
        self._log(now, n)

    def take_pace(self, now: float, n: int = 1) -> None:
        # After an idle spell start evenly paced: no saved-up burst (GCRA's TAT restarts at now).
        idle = self._tat < now - self._tolerance_s()
        self._tat = (now + self._tolerance_s() if idle else self._tat) + n / self.rate

    def _log(self, now: float, n: int) -> LogEntry:
        entry = LogEntry(now, n)
        self._sent.append(entry)
        self._in_window += n
        return entry

    def restamp(self, entry: LogEntry) -> None:
        """The send's bytes were written now: it counts in the windows from now (never earlier
        than it was admitted). Safe for the cap: a later stamp only holds the room longer."""
        entry.at = max(entry.at, self.clock())

    async def pace(self) -> None:
        """Wait until the next send is due (the dispatcher's rule), and spend one recipient."""
        await self.wait_due()
        self.take_pace(self.clock())

    async def wait_due(self) -> None:
        """Wait until the next send is due; the caller spends what it sends with `take_pace`."""
        while (wait := self.pace_delay_s(self.clock())) > 0:
            await asyncio.sleep(wait)

    async def admit(self, n: int = 1) -> LogEntry:
        """Wait until a send of `n` recipients keeps every rolling window within the rate, then
        log it; the entry returned can be `restamp`ed when the request is written."""
        # A call larger than a window (AIMD cut the rate after it was made up) waits for an empty
        # window: it is still within the ceiling, since it was made up to the rate before the cut.
        while (wait := self.window_delay_s(self.clock(), n)) > 0:
            await asyncio.sleep(wait)
        return self._log(self.clock(), n)

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
