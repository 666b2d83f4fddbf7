"""Read queries, for stages that read (never write) the database."""

from __future__ import annotations

from typing import Any

import aiosqlite

STATUSES = ("pending", "sending", "sent", "failed", "cancelled", "paused", "suppressed")
RESULTS = ("delivered", "bounced", "complained", "opened", "opens")


async def topic_counts(db: aiosqlite.Connection, topic_id: str) -> dict[str, Any] | None:
    """Totals by status and by result for one topic (from its counters), or None if unknown."""
    async with db.execute("SELECT name, n FROM topic_counts WHERE topic_id = ?", (topic_id,)) as cursor:
        counters = {name: n for name, n in await cursor.fetchall()}
    by_status = {status: counters.get(status, 0) for status in STATUSES}
    if not any(by_status.values()):
        return None
    results = {name: counters.get(name, 0) for name in RESULTS}
    return {
        "total": sum(by_status.values()),
        **by_status,
        **results,
        "first_sent_at_ms": counters.get("first_sent_at_ms"),
        "last_sent_at_ms": counters.get("last_sent_at_ms"),
        "request_counts": {k: v for k, v in by_status.items() if v},
        "result_counts": {k: results[k] for k in ("delivered", "bounced", "complained", "opened")},
    }


async def recent_topics(db: aiosqlite.Connection, limit: int, offset: int) -> list[dict[str, Any]]:
    """Topics, most recently posted to first."""
    async with db.execute(
        "SELECT topic_id, first_posted_at_ms, last_posted_at_ms, total FROM topics"
        " ORDER BY last_posted_at_ms DESC, topic_id LIMIT ? OFFSET ?",
        (limit, offset),
    ) as cursor:
        rows = await cursor.fetchall()
    return [{"topic_id": r[0], "first_posted_at_ms": r[1], "last_posted_at_ms": r[2], "total": r[3]} for r in rows]
