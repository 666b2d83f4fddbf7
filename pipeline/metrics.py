"""Prometheus metrics from every process, merged at `GET /metrics` by prometheus_client's multiprocess mode.

Why multiprocess mode rather than the stages reporting to one place: each stage already
owns what it measures (the sender its SES calls, the recorder its commits), and an
increment here is a write to a memory-mapped file of the process's own, with no message,
no new edge between stages and nothing to lose when a stage dies. The supervisor gives
the tree one folder (`metrics_folder.prepare`, wiped at every start, beside the database unless
PROMETHEUS_MULTIPROC_DIR says otherwise) before any stage starts, and marks a dead
child's files (`process_died`) so its live gauges stop counting; its counters stay, so
totals survive a restart. Ingest reads the folder at each scrape (`exposition`).

Without the folder (in-process tests, a stage run by hand) the same metrics count in the
process's own registry.

The recorder counts only what it committed: `Tally` holds its increments until the
transaction's COMMIT (and drops them on a rollback), so a counter never runs ahead of the
database it describes.
"""

from __future__ import annotations

import os
from collections import Counter as Counts
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as multiprocess_mode

from pipeline.metrics_folder import ENV

NAMESPACE: Final = "ses_sender"

# --- counters ------------------------------------------------------------------------------

RECIPIENTS = Counter(
    "recipients",
    "Recipients posted to /v1/messages, by what became of them (accepted, rejected, duplicate, suppressed)",
    ["outcome"],
    namespace=NAMESPACE,
)
SES_CALLS = Counter(
    "ses_calls", "SES send calls, by operation and result (ok or error)", ["operation", "result"], namespace=NAMESPACE
)
SENT = Counter("sent_recipients", "Recipients SES accepted", namespace=NAMESPACE)
FAILED = Counter(
    "failed_recipients", "Recipients failed for good, by SES's error code", ["reason"], namespace=NAMESPACE
)
RETRIED = Counter(
    "retried_recipients",
    "Recipients SES did not take this time, to be sent again (throttled, transient, account_paused)",
    ["verdict"],
    namespace=NAMESPACE,
)
THROTTLES = Counter("throttles", "Recipients SES answered with a throttle (the rate then drops)", namespace=NAMESPACE)
EVENTS = Counter("ses_events", "SES events recorded, by kind (Delivery, Bounce, ...)", ["kind"], namespace=NAMESPACE)
OPENS = Counter("opens", "Pixel hits recorded (every signed hit of a sent recipient)", namespace=NAMESPACE)
CLICKS = Counter("clicks", "Clicks of tracked links recorded", namespace=NAMESPACE)
UNSUBSCRIBES = Counter("unsubscribes", "Unsubscribes recorded (one-click or the page)", namespace=NAMESPACE)
RESTARTS = Counter("stage_restarts", "Stage processes started again after one died", ["stage"], namespace=NAMESPACE)

# --- gauges --------------------------------------------------------------------------------

IN_FLIGHT = Gauge(
    "ses_in_flight_recipients", "Recipients in SES calls right now", namespace=NAMESPACE, multiprocess_mode="livesum"
)
CALLS_IN_FLIGHT = Gauge(
    "ses_in_flight_calls", "SES send calls waiting for their answer", namespace=NAMESPACE, multiprocess_mode="livesum"
)
RATE_LIMIT = Gauge(
    "send_rate_limit_per_second",
    "The sender's rate right now, after AIMD's cuts for throttling",
    namespace=NAMESPACE,
    multiprocess_mode="livemax",
)
QUOTA_USED = Gauge(
    "ses_quota_used", "Sends in SES's last 24 hours (GetAccount)", namespace=NAMESPACE, multiprocess_mode="livemax"
)
QUOTA_LEFT = Gauge(
    "ses_quota_left",
    "Sends left in SES's 24-hour quota (GetAccount; -1: unlimited)",
    namespace=NAMESPACE,
    multiprocess_mode="livemax",
)

# --- histograms ----------------------------------------------------------------------------

SES_LATENCY = Histogram(
    "ses_call_seconds",
    "SES send call latency, from the request's start to its answer",
    ["operation"],
    namespace=NAMESPACE,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
POST_LATENCY = Histogram(
    "post_messages_seconds",
    "POST /v1/messages, from the request to its answer (the recipients committed)",
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
COMMIT_LATENCY = Histogram(
    "recorder_commit_seconds",
    "The recorder's transactions, from BEGIN to COMMIT (a batch of requests each)",
    namespace=NAMESPACE,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
LATENESS = Histogram(
    "scheduler_lateness_seconds",
    "How late due work left for SES: each call's start, after the due time of its earliest recipient",
    namespace=NAMESPACE,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
)


# --- the tree's folder ---------------------------------------------------------------------


def process_died(pid: int | None) -> None:
    """A child is gone: its live gauges stop counting (its counters and histograms stay)."""
    if pid and os.environ.get(ENV):
        multiprocess_mode.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """Every process's metrics in Prometheus's text format (this process's alone without the folder)."""
    if not os.environ.get(ENV):
        from prometheus_client import REGISTRY

        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess_mode.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


# --- the recorder's increments, held until COMMIT ------------------------------------------


class Tally:
    """Counter increments made inside a transaction, applied only once it commits."""

    def __init__(self) -> None:
        self.events: Counts[str] = Counts()
        self.opens = 0
        self.clicks = 0
        self.unsubscribes = 0
        self._marks: list[tuple[Counts[str], int, int, int]] = []

    def mark(self) -> None:
        """A savepoint: `rollback_to_mark` drops what comes after it."""
        self._marks.append((self.events.copy(), self.opens, self.clicks, self.unsubscribes))

    def release_mark(self) -> None:
        self._marks.pop()

    def rollback_to_mark(self) -> None:
        self.events, self.opens, self.clicks, self.unsubscribes = self._marks.pop()

    def commit(self) -> None:
        for kind, n in self.events.items():
            EVENTS.labels(kind).inc(n)
        for counter, n in ((OPENS, self.opens), (CLICKS, self.clicks), (UNSUBSCRIBES, self.unsubscribes)):
            if n:
                counter.inc(n)
        self.discard()

    def discard(self) -> None:
        self.events.clear()
        self.opens = self.clicks = self.unsubscribes = 0
        self._marks.clear()


# The recorder's one transaction at a time: its write functions add here, apply_batch commits.
TALLY: Final = Tally()
