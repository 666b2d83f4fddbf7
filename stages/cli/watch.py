"""A topic going out, watched through `GET /v1/topics/{id}` until nothing is left to send.

`Sending.of` reads the topic's statistics (docs/api.md#get-v1topicstopic_id-and-get-v1topics):
what is still to go is `pending` + `sending` (+ `paused`, which waits for a resume);
everything else has an outcome. The watch ends when nothing is pending or sending:
paused recipients do not move until someone resumes them, so they end the watch too,
and the summary says so. The rate is measured here, from the samples the polls give.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console

from stages.cli.client import Client, topic_path
from stages.cli.progress import Rate, duration, eta_s, meter

POLL_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Sending:
    total: int
    pending: int  # pending + sending: what the server will still try
    paused: int
    sent: int
    failed: int
    bounced: int
    reason: str | None  # why the reputation guard holds the topic

    @classmethod
    def of(cls, stats: dict[str, Any]) -> Sending:
        def count(name: str) -> int:
            value = stats.get(name, 0)
            return value if isinstance(value, int) else 0

        reason = stats.get("paused_reason")
        return cls(
            total=count("total"),
            pending=count("pending") + count("sending"),
            paused=count("paused"),
            sent=count("sent"),
            failed=count("failed"),
            bounced=count("bounced"),
            reason=reason if isinstance(reason, str) else None,
        )

    @property
    def done(self) -> int:
        """Recipients with an outcome: sent, failed, cancelled, suppressed, unknown."""
        return max(self.total - self.pending - self.paused, 0)

    @property
    def finished(self) -> bool:
        return self.pending == 0

    def detail(self, per_s: float | None) -> str:
        """`sent 120  failed 0  bounced 1  14.0/s  ETA 27s`, and what holds the topic if anything does."""
        parts = [f"sent {self.sent:,}", f"failed {self.failed:,}", f"bounced {self.bounced:,}"]
        if per_s is not None:
            parts.append(f"{per_s:,.1f}/s")
        eta = eta_s(self.pending, per_s)
        if eta is not None and not self.finished:
            parts.append(f"ETA {duration(eta)}")
        if self.paused:
            parts.append(f"paused {self.paused:,}")
        if self.reason:
            parts.append(f"held: {self.reason}")
        return "  ".join(parts)


def watch(
    client: Client,
    topic_id: str,
    console: Console,
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the topic until nothing is pending or sending; its last statistics."""
    bar = meter("sending", console)
    rate = Rate()
    try:
        while True:
            stats = client.get(topic_path(topic_id))
            sending = Sending.of(stats)
            rate.add(clock(), sending.sent + sending.failed)
            bar.update(sending.done, sending.total, sending.detail(rate.per_s()))
            if sending.finished:
                return dict(stats)
            time.sleep(poll_s)
    finally:
        bar.close()
