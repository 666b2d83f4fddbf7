"""Fair claims: due work is shared between topics, not served first come, first served.

Two campaigns due at the same time share the rate: each claim takes an equal share
from every topic with due work (up to MAX_TOPICS_PER_CLAIM of them, starting after the
topic the last claim ended on, so more topics than that take turns), then interleaves
them. Every step is an index seek on `recipients_pending_topic`, so the cost does not
grow with the backlog: a million scheduled rows stay cheap to claim from.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.db.dialect import SQLITE, Conn, dialect, in_list
from pipeline.db.status import Status
from pipeline.messages import ClaimDue, Claimed, Recipient
from stages.recorder.events import suppressed_rows
from stages.recorder.writes import next_due_ms

MAX_TOPICS_PER_CLAIM = 32
# Topics with pending but not yet due work are stepped over; this bounds that walk.
MAX_TOPICS_VISITED = 256


@dataclass(slots=True)
class ClaimState:
    """The recorder's memory between claims."""

    seq: int = 0
    after_topic: str | None = None


def claim_due(conn: Conn, request: ClaimDue, state: ClaimState) -> Claimed:
    """Mark up to `limit` due rows as sending, shared fairly between topics."""
    state.seq += 1
    topics = due_topics(conn, request.due_by_ms, state.after_topic)
    taken: dict[str, list[Recipient]] = {topic: [] for topic in topics}
    remaining = request.limit
    first_share = share(request.limit, topics)
    for topic in topics:
        taken[topic] = claim_topic(conn, topic, request.due_by_ms, min(first_share, remaining))
        remaining -= len(taken[topic])
    # What small topics left over goes to those that filled their share (they may have more).
    filled = [t for t in topics if len(taken[t]) == first_share]
    if remaining > 0 and filled:
        for topic in filled:
            more = claim_topic(conn, topic, request.due_by_ms, min(share(remaining, filled), remaining))
            taken[topic].extend(more)
            remaining -= len(more)
    if topics:
        state.after_topic = topics[-1]
    recipients = tuple(interleave(list(taken.values())))
    return Claimed(request.corr_id, recipients, next_due_ms(conn), state.seq)


def share(limit: int, topics: list[str]) -> int:
    return math.ceil(limit / len(topics)) if topics else 0


def due_topics(conn: Conn, due_by_ms: int, after: str | None) -> list[str]:
    """Up to MAX_TOPICS_PER_CLAIM topics with due work, in turn after `after`."""
    found: list[str] = []
    for visited, topic in enumerate(pending_topics_from(conn, after)):
        if visited >= MAX_TOPICS_VISITED or len(found) >= MAX_TOPICS_PER_CLAIM:
            break
        earliest = conn.execute(
            f"SELECT MIN(due_at_ms) FROM recipients WHERE status = '{Status.PENDING}' AND topic_id = ?", (topic,)
        ).fetchone()[0]
        if earliest is not None and earliest <= due_by_ms:
            found.append(topic)
    return found


def pending_topics_from(conn: Conn, after: str | None) -> Iterator[str]:
    """Topics with pending rows, ascending from just after `after`, wrapping around once."""
    cursor = after
    while (topic := next_pending_topic(conn, cursor)) is not None:
        yield topic
        cursor = topic
    if after is None:
        return
    cursor = None
    while (topic := next_pending_topic(conn, cursor)) is not None and topic <= after:
        yield topic
        cursor = topic


def next_pending_topic(conn: Conn, after: str | None) -> str | None:
    """The smallest topic with pending rows after `after` (None: from the start, '' included)."""
    # INDEXED BY: left to itself the planner takes recipients_topic, which walks every
    # finished row of the next topic (a million sent rows) before finding a pending one.
    comparison = ">=" if after is None else ">"
    indexed_by = " INDEXED BY recipients_pending_topic" if dialect(conn) == SQLITE else ""
    row = conn.execute(
        f"SELECT MIN(topic_id) FROM recipients{indexed_by}"
        f" WHERE status = '{Status.PENDING}' AND topic_id {comparison} ?",
        (after or "",),
    ).fetchone()
    return None if row is None else row[0]


def claim_topic(conn: Conn, topic: str, due_by_ms: int, limit: int) -> list[Recipient]:
    if limit <= 0:
        return []
    # PostgreSQL: rows another transaction is changing (a hold on another node) are passed over.
    skip_locked = "" if dialect(conn) == SQLITE else " FOR UPDATE SKIP LOCKED"
    rows = conn.execute(
        f"UPDATE recipients SET status = '{Status.SENDING}' WHERE id IN ("
        f" SELECT id FROM recipients WHERE status = '{Status.PENDING}' AND topic_id = ? AND due_at_ms <= ?"
        f" ORDER BY due_at_ms, id LIMIT ?{skip_locked})"
        " RETURNING id, email, topic_id, content_id, due_at_ms, data",
        (topic, due_by_ms, limit),
    ).fetchall()
    rows.sort(key=lambda row: (row[4], row[0]))
    # An address suppressed after it was stored (a bounce, a complaint, an unsubscribe) is never sent.
    blocked = suppressed_rows(conn, ((row[0], row[1], row[3]) for row in rows))
    if blocked:
        conn.executemany(f"UPDATE recipients SET status = '{Status.SUPPRESSED}' WHERE id = ?", ((i,) for i in blocked))
        rows = [row for row in rows if row[0] not in blocked]
    lists = content_lists(conn, {row[3] for row in rows})
    return [Recipient(row[0], row[1], row[2], row[3], lists.get(row[3]), row[5], row[4]) for row in rows]


def content_lists(conn: Conn, content_ids: set[int]) -> dict[int, str]:
    """The list of each content that names one (the sender's unsubscribe holds match on it)."""
    if not content_ids:
        return {}
    among, ids = in_list(conn, sorted(content_ids))
    rows = conn.execute(f"SELECT id, list_id FROM contents WHERE id {among} AND list_id IS NOT NULL", (ids,))
    return dict(rows.fetchall())


def interleave(lists: list[list[Recipient]]) -> Iterator[Recipient]:
    """One from each topic in turn, so the sender's queue alternates between them."""
    longest = max((len(items) for items in lists), default=0)
    for index in range(longest):
        for items in lists:
            if index < len(items):
                yield items[index]
