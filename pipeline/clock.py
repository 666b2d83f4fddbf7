"""The one clock for stored times: wall-clock milliseconds since the epoch.

Due times, send times and event times are written by one process and compared by
another, so every stage must read them the same way.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
