"""Per-client request rate limit on the API (API_RATE_LIMIT, API_RATE_BURST): 429 past it.

GCRA (the generic cell rate algorithm): one "theoretical arrival time" per client, so
the memory is a float per active client and a check is a few arithmetic operations.
A client is the token's subject, the API key, or the peer address when auth is off.
The pixel and the SNS webhook are never limited: a mail client or SNS must never be
turned away by it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from stages.ingest.errors import ApiError

PRUNE_ABOVE = 10_000


class ClientLimiter:
    """`wait_s(client)`: 0 and counted when allowed, else the seconds until it would be."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.interval_s = 1.0 / rate_per_s
        self.tolerance_s = self.interval_s * (burst - 1)
        self.clock = clock
        self.arrivals: dict[str, float] = {}

    def wait_s(self, client: str) -> float:
        now = self.clock()
        arrival = max(self.arrivals.get(client, now), now)
        early_s = arrival - now - self.tolerance_s
        if early_s > 0:
            return early_s
        if len(self.arrivals) > PRUNE_ABOVE:
            self.arrivals = {k: v for k, v in self.arrivals.items() if v > now}
        self.arrivals[client] = arrival + self.interval_s
        return 0.0


def make_limiter(rate_per_s: float, burst: int) -> ClientLimiter | None:
    return ClientLimiter(rate_per_s, burst) if rate_per_s > 0 else None


def enforce(limiter: ClientLimiter, client: str) -> None:
    """429 with Retry-After when `client` is over the rate."""
    wait_s = limiter.wait_s(client)
    if wait_s > 0:
        raise ApiError(
            429,
            "too_many_requests",
            f"more than {limiter.rate_per_s:g} requests per second from this client (API_RATE_LIMIT); retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )
