"""Read queries, for stages that read (never write) the database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.db.status import Status

if TYPE_CHECKING:
    from pipeline.db.readers import Reader

STATUSES: tuple[str, ...] = tuple(Status)
RESULTS = (
    "delivered",
    "bounced",
    "complained",
    "opened",
    "opens",
    "opened_human",
    "opens_machine",
    "clicked",
    "clicks",
    "clicked_human",
    "clicks_machine",
    "unsubscribed",
)
# The original server's request_counts keys (its status codes 0-4), from our statuses.
ORIGINAL_STATUS: dict[str, str] = {
    Status.PENDING: "Created",
    Status.PAUSED: "Created",
    Status.SENDING: "Processed",
    Status.UNKNOWN: "Processed",
    Status.SENT: "Sent",
    Status.FAILED: "Failed",
    Status.CANCELLED: "Stopped",
    Status.SUPPRESSED: "Stopped",
}
ORIGINAL_STATUS_KEYS = ("Created", "Processed", "Sent", "Failed", "Stopped")
# SES's own event names (as the original's result_counts spells them), from our kinds.
SES_EVENT_NAMES = {
    "delivery": "Delivery",
    "bounce": "Bounce",
    "complaint": "Complaint",
    "open": "Open",
    "send": "Send",
    "reject": "Reject",
    "delivery_delay": "DeliveryDelay",
    "rendering_failure": "Rendering Failure",
    "click": "Click",
    "subscription": "Subscription",
}
ALWAYS_SHOWN_EVENTS = ("Delivery", "Bounce", "Complaint", "Open")
# guard_state's names: why the reputation guard holds all sending, and when it was last resumed.
GUARD_ACCOUNT_REASON = "account_paused_reason"
GUARD_ACCOUNT_RESUMED = "account_resumed_at_ms"


async def topic_counts(db: Reader, topic_id: str) -> dict[str, Any]:
    """Totals by status and by result for one topic, from its counters (zeros when unknown)."""
    rows = await db.fetchall("SELECT name, n FROM topic_counts WHERE topic_id = ?", (topic_id,))
    counters = {name: n for name, n in rows}
    by_status = {status: counters.get(status, 0) for status in STATUSES}
    results = {name: counters.get(name, 0) for name in RESULTS}
    return {
        "total": sum(by_status.values()),
        **by_status,
        **results,
        "first_sent_at_ms": counters.get("first_sent_at_ms"),
        "last_sent_at_ms": counters.get("last_sent_at_ms"),
        "request_counts": original_request_counts(by_status),
        "result_counts": original_result_counts(counters),
    }


def original_request_counts(by_status: dict[str, int]) -> dict[str, int]:
    counts = dict.fromkeys(ORIGINAL_STATUS_KEYS, 0)
    for status, n in by_status.items():
        counts[ORIGINAL_STATUS[status]] += n
    return counts


def original_result_counts(counters: dict[str, int]) -> dict[str, int]:
    """Recipients with at least one event of each kind, keyed as SES names the kind.

    `Open` counts recipients opened by our pixel or by SES's own open tracking, once each.
    """
    counts = {name: 0 for name in ALWAYS_SHOWN_EVENTS}
    for kind, name in SES_EVENT_NAMES.items():
        n = counters.get("opened", 0) if kind == "open" else counters.get(f"event:{kind}", 0)
        if n or name in counts:
            counts[name] = n
    return counts


async def recent_topics(db: Reader, limit: int, offset: int) -> list[dict[str, Any]]:
    """Topics, most recently posted to first."""
    rows = await db.fetchall(
        "SELECT topic_id, first_posted_at_ms, last_posted_at_ms, total FROM topics"
        " ORDER BY last_posted_at_ms DESC, topic_id LIMIT ? OFFSET ?",
        (limit, offset),
    )
    return [{"topic_id": r[0], "first_posted_at_ms": r[1], "last_posted_at_ms": r[2], "total": r[3]} for r in rows]
