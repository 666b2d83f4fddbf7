"""The send gate: pauses all sending during an SES outage or an account-level stop.

Transient failures (5xx, connection errors, timeouts) close it for a growing, capped
pause, so an outage neither burns the backlog into failures nor hammers SES; the
first success resets it. Account-level errors (sending paused, daily quota) close it
for a fixed, longer pause. Pure apart from `wait_open`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pipeline.backoff import jittered_backoff_s

OUTAGE_MIN_PAUSE_S = 0.25
# Short enough that sending resumes within seconds of SES coming back.
OUTAGE_MAX_PAUSE_S = 4.0


class SendGate:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.paused_until = 0.0
        self.reason = ""
        self.failures = 0

    def pause_s(self, now: float) -> float:
        return max(0.0, self.paused_until - now)

    def pause(self, now: float, seconds: float, reason: str) -> None:
        if now + seconds > self.paused_until:
            self.paused_until = now + seconds
            self.reason = reason

    def on_transient_failure(self, now: float, reason: str) -> float:
        """Close for longer with each failure in a row; return the pause."""
        self.failures += 1
        pause = jittered_backoff_s(self.failures - 1, OUTAGE_MIN_PAUSE_S, OUTAGE_MAX_PAUSE_S)
        self.pause(now, pause, reason)
        return pause

    def on_success(self) -> None:
        self.failures = 0

    async def wait_open(self) -> None:
        while (pause := self.pause_s(self.clock())) > 0:
            await asyncio.sleep(pause)
