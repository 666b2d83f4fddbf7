"""The recorder: the only process that writes SQLite.

It takes every queued request it can (up to MAX_BATCH), applies them in one
transaction (group commit), then replies to each asker. A request that fails rolls
back alone (a savepoint each); a commit that fails (disk full, read-only file) refuses
every store in the batch with 503, so nothing is acknowledged that was not stored.
It returns once every producer has sent EndOfStream, or at its drain deadline.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable

from pipeline.channels import WRITES_TO, ChannelFull, describe
from pipeline.db.schema import open_writer
from pipeline.messages import (
    ClaimDue,
    EndOfStream,
    Message,
    Ping,
    Pong,
    RecordOutcomes,
    Refused,
    StoreMessages,
    WakeUp,
)
from pipeline.runtime import BootError, StageContext
from stages.recorder import writes

MAX_BATCH = 256
REPLY_TIMEOUT_S = 2.0
# Leave the supervisor's kill deadline some room for our own exit.
DRAIN_MARGIN_S = 0.5
PRODUCERS = frozenset(name for name, targets in WRITES_TO.items() if "recorder" in targets)

Reply = tuple[str, Message]


async def run(ctx: StageContext) -> None:
    """Serve write requests until every producer is done (or the drain deadline)."""
    try:
        conn = open_writer(ctx.settings.database_path)
    except (sqlite3.Error, OSError) as problem:
        raise BootError(f"cannot open {ctx.settings.database_path}: {problem}") from problem
    try:
        requeued = writes.requeue_claimed(conn)
        writes.forget_old_idempotency_keys(conn, now_ms())
        if requeued:
            ctx.log.warning("requeued %d recipient(s) claimed before the last stop", requeued)
        ctx.ready()
        counts = await serve(ctx, conn)
        ctx.log.info("recorder done: %s", dict(counts) or "nothing written")
    finally:
        conn.close()


async def serve(ctx: StageContext, conn: sqlite3.Connection) -> Counter[str]:
    loop = asyncio.get_running_loop()
    waiting_for = set(PRODUCERS)
    deadline: float | None = None
    counts: Counter[str] = Counter()
    while waiting_for:
        if ctx.stopping.is_set() and deadline is None:
            deadline = loop.time() + max(ctx.settings.shutdown_timeout_s - DRAIN_MARGIN_S, 0.1)
        first = await (ctx.inbox.get() if deadline is None else ctx.inbox.get_within(deadline - loop.time()))
        if first is None:
            ctx.log.warning("drain deadline reached; still waiting for %s", sorted(waiting_for))
            break
        batch = take_batch(ctx, first)
        for message in batch:
            if isinstance(message, EndOfStream):
                waiting_for.discard(message.sender)
        replies = apply_batch(ctx, conn, batch, counts)
        await send_replies(ctx, replies)
    return counts


def take_batch(ctx: StageContext, first: Message) -> list[Message]:
    """The first message plus whatever is already queued behind it."""
    batch = [first]
    while len(batch) < MAX_BATCH:
        more = ctx.inbox.get_nowait()
        if more is None:
            break
        batch.append(more)
    return batch


def apply_batch(ctx: StageContext, conn: sqlite3.Connection, batch: list[Message], counts: Counter[str]) -> list[Reply]:
    """One transaction for the whole batch; one savepoint per request."""
    work = [m for m in batch if not isinstance(m, (EndOfStream, WakeUp))]
    if not work:
        return []
    now = now_ms()
    replies: list[Reply] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for message in work:
            reply = apply_one(ctx, conn, message, now)
            if reply is not None:
                replies.append(reply)
                counts[describe(message)] += 1
        conn.execute("COMMIT")
    except sqlite3.Error as problem:
        ctx.log.error("commit failed, nothing in this batch was stored: %s", problem)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return refuse_stores(work, f"the database cannot take writes: {problem}")
    return replies


def apply_one(ctx: StageContext, conn: sqlite3.Connection, message: Message, now: int) -> Reply | None:
    handler = HANDLERS.get(type(message))
    if handler is None:
        ctx.log.error("dropped an unexpected %s", describe(message))
        return None
    conn.execute("SAVEPOINT one")
    try:
        reply = handler(conn, message, now)
    except sqlite3.Error as problem:
        conn.execute("ROLLBACK TO one")
        conn.execute("RELEASE one")
        ctx.log.error("%s failed and was rolled back: %s", describe(message), problem)
        if isinstance(message, StoreMessages):
            return message.reply_to, Refused(message.corr_id, 503, "storage_error", "could not store")
        return None
    conn.execute("RELEASE one")
    return reply


def refuse_stores(work: list[Message], why: str) -> list[Reply]:
    """After a failed commit only stores get an answer; the others ask again."""
    return [
        (m.reply_to, Refused(m.corr_id, 503, "storage_unavailable", why)) for m in work if isinstance(m, StoreMessages)
    ]


async def send_replies(ctx: StageContext, replies: list[Reply]) -> None:
    for reply_to, reply in replies:
        try:
            await ctx.outboxes[reply_to].put(reply, timeout_s=REPLY_TIMEOUT_S)
        except ChannelFull:
            ctx.log.warning("%s is not reading; dropped a %s", reply_to, describe(reply))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _store(conn: sqlite3.Connection, m: Message, now: int) -> Reply:
    assert isinstance(m, StoreMessages)
    return m.reply_to, writes.store_messages(conn, m, now)


def _claim(conn: sqlite3.Connection, m: Message, now: int) -> Reply:
    assert isinstance(m, ClaimDue)
    return m.reply_to, writes.claim_due(conn, m)


def _outcomes(conn: sqlite3.Connection, m: Message, now: int) -> Reply:
    assert isinstance(m, RecordOutcomes)
    return m.reply_to, writes.record_outcomes(conn, m)


def _ping(conn: sqlite3.Connection, m: Message, now: int) -> Reply:
    assert isinstance(m, Ping)
    conn.execute("SELECT 1").fetchone()
    return m.reply_to, Pong(m.corr_id)


HANDLERS: dict[type[Message], Callable[[sqlite3.Connection, Message, int], Reply]] = {
    StoreMessages: _store,
    ClaimDue: _claim,
    RecordOutcomes: _outcomes,
    Ping: _ping,
}
