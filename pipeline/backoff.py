"""Jittered exponential backoff, shared by the supervisor and the sender."""

from __future__ import annotations

import random

_SHARED_RNG = random.Random()


def jittered_backoff_s(attempt: int, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """min(max_s, min_s * 2**attempt) * uniform(0.5, 1) (dramatiq's compute_backoff)."""
    base = min(max_s, min_s * 2.0 ** min(attempt, 32))
    return base * (rng or _SHARED_RNG).uniform(0.5, 1.0)
