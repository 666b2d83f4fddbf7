"""Read queries, for stages that read (never write) the database."""

from __future__ import annotations

from typing import Any

import aiosqlite

STATUSES = ("pending", "sending", "sent", "failed", "cancelled", "paused")


async def topic_counts(db: aiosqlite.Connection, topic_id: str) -> dict[str, Any] | None:
    """Totals by status for one topic, or None when the topic has no recipients."""
    cursor = await db.execute(
        "SELECT status, COUNT(*), MIN(sent_at_ms), MAX(sent_at_ms) FROM recipients WHERE topic_id = ? GROUP BY status",
        (topic_id,),
    )
    rows = await cursor.fetchall()
    if not rows:
        return None
    by_status = {status: 0 for status in STATUSES}
    first_sent = last_sent = None
    for status, count, first, last in rows:
        by_status[status] = count
        if status == "sent":
            first_sent, last_sent = first, last
    return {
        "total": sum(by_status.values()),
        **by_status,
        "first_sent_at_ms": first_sent,
        "last_sent_at_ms": last_sent,
    }
