"""Read queries, for stages that read (never write) the database."""

from __future__ import annotations

from typing import Any

import aiosqlite

STATUSES = ("pending", "sending", "sent", "failed", "cancelled", "paused", "suppressed")


async def topic_counts(db: aiosqlite.Connection, topic_id: str) -> dict[str, Any] | None:
    """Totals by status and by result for one topic, or None when it has no recipients."""
    async with db.execute(
        "SELECT status, COUNT(*), MIN(sent_at_ms), MAX(sent_at_ms),"
        " SUM(delivery = 'delivered'), SUM(delivery = 'bounced'), COUNT(complained_at_ms),"
        " SUM(open_count > 0), SUM(open_count)"
        " FROM recipients WHERE topic_id = ? GROUP BY status",
        (topic_id,),
    ) as cursor:
        rows = list(await cursor.fetchall())
    if not rows:
        return None
    by_status = dict.fromkeys(STATUSES, 0)
    results = {"delivered": 0, "bounced": 0, "complained": 0, "opened": 0, "opens": 0}
    first_sent = last_sent = None
    for status, count, first, last, delivered, bounced, complained, opened, opens in rows:
        by_status[status] = count
        if status == "sent":
            first_sent, last_sent = first, last
        for name, value in zip(results, (delivered, bounced, complained, opened, opens), strict=True):
            results[name] += value or 0
    return {
        "total": sum(by_status.values()),
        **by_status,
        **results,
        "first_sent_at_ms": first_sent,
        "last_sent_at_ms": last_sent,
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
