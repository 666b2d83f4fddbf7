"""The recorder: the only process that writes SQLite.

It takes every queued request it can (up to MAX_BATCH), applies them in one
transaction (group commit), then replies to each asker. A request that fails rolls
back alone (a savepoint each); a commit that fails (disk full, read-only file) refuses
every store in the batch with 503, so nothing is acknowledged that was not stored.
It returns once every producer has sent EndOfStream, or at its drain deadline.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from dataclasses import replace

from config.settings import GuardSettings, Settings
from pipeline import metrics
from pipeline.channels import PRODUCERS, ChannelFull, describe
from pipeline.clock import now_ms
from pipeline.db import postgres
from pipeline.db.blocking_pg import BlockingPostgres
from pipeline.db.dialect import STORE_ERRORS, UNSTORABLE, Conn, begin_writing
from pipeline.db.original import OriginalDatabase
from pipeline.db.schema import open_writer, tracking_key
from pipeline.guardrails import GuardEvent
from pipeline.messages import (
    ChangeSuppression,
    ClaimDue,
    EndOfStream,
    EventsRecordedTogether,
    GetGuard,
    HoldAddressRows,
    HoldTopicRows,
    Message,
    Ping,
    Pong,
    RecordEvents,
    RecordEventsTogether,
    RecordOpens,
    RecordOutcomes,
    Refusal,
    Refused,
    RequeueClaimed,
    Requeued,
    ResumeAccount,
    ResumeTopic,
    StoreMessages,
    WakeUp,
    WorkAdded,
)
from pipeline.runtime import BootError, StageContext
from stages.recorder import events, writes
from stages.recorder.claims import ClaimState, claim_due
from stages.recorder.guard import GuardKeeper

MAX_BATCH = 256
REPLY_TIMEOUT_S = 2.0
PURGE_EVERY_MS = 3_600_000
# Leave the supervisor's kill deadline some room for our own exit.
DRAIN_MARGIN_S = 0.5

Reply = tuple[str, Message]


async def run(ctx: StageContext) -> None:
    """Serve write requests until every producer is done (or the drain deadline)."""
    conn = open_store(ctx.settings)
    try:
        # With SQLite no sender outlives the recorder's start, so what is `sending` was left
        # by the last run. With PostgreSQL another node may be sending it: the node that
        # takes the sender lock puts it back instead (RequeueClaimed).
        requeued = writes.requeue_claimed(conn) if ctx.settings.postgres_url is None else 0
        if requeued:
            ctx.log.warning("requeued %d recipient(s) claimed before the last stop", requeued)
        writer = Writer(conn, GuardKeeper(conn, ctx.settings.guard, now_ms()))
        if isinstance(conn, BlockingPostgres):
            postgres.register_node(conn, ctx.settings.node_name, ctx.settings.node_url, now_ms())
            hear_work_elsewhere(ctx, conn)
        ctx.ready()
        await send_replies(ctx, writer.guard.at_start())
        counts = await serve(ctx, writer)
        ctx.log.info("recorder done: %s", dict(counts) or "nothing written")
    finally:
        conn.close()


def hear_work_elsewhere(ctx: StageContext, conn: BlockingPostgres) -> None:
    """Work committed by any node's recorder wakes this node's scheduler (writes.notify_work)."""
    loop = asyncio.get_running_loop()
    scheduler = ctx.outboxes["scheduler"]

    def wake(payload: str) -> None:
        if payload.lstrip("-").isdigit():
            loop.call_soon_threadsafe(scheduler.put_nowait, WorkAdded(int(payload)))

    conn.listen(writes.WORK_CHANNEL, wake)


def open_store(settings: Settings) -> Conn:
    """The writing connection, migrated: PostgreSQL when DATABASE_URL names it, else the SQLite file."""
    if settings.postgres_url is not None:
        try:
            return postgres.open_writer(settings.postgres_url, settings.node_name)
        except (*STORE_ERRORS, OSError) as problem:  # never the URL: it may hold a password
            raise BootError(f"cannot open the PostgreSQL database: {type(problem).__name__}: {problem}") from problem
    try:
        return open_writer(settings.database_path)
    except (sqlite3.Error, OSError, OriginalDatabase) as problem:
        raise BootError(f"cannot open {settings.database_path}: {problem}") from problem


async def serve(ctx: StageContext, writer: Writer) -> Counter[str]:
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
        replies = apply_batch(writer, ctx.log, batch, counts)
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


class Writer:
    """Applies each request to the database and says whom to answer."""

    def __init__(self, conn: Conn, guard: GuardKeeper | None = None) -> None:
        self.conn = conn
        self.guard = guard if guard is not None else GuardKeeper(conn, GuardSettings(), now_ms())
        self.claims = ClaimState()
        self.tracking_key = tracking_key(conn)  # made by the migration; it never changes
        self.next_purge_ms = 0  # expired Idempotency-Keys go at start, then every PURGE_EVERY_MS

    def purge_if_due(self, now: int) -> None:
        if now >= self.next_purge_ms:
            writes.forget_old_idempotency_keys(self.conn, now)
            self.next_purge_ms = now + PURGE_EVERY_MS

    def record(self, message: RecordOutcomes | RecordEvents, now: int) -> list[Reply]:
        """Outcomes and SES events; the reputation guard judges what they add."""
        seen: list[GuardEvent] = []
        if isinstance(message, RecordOutcomes):
            answer: Message = writes.record_outcomes(self.conn, message, now, seen)
        else:
            answer = events.record_events(self.conn, message, now, seen)
        return [(message.reply_to, answer), *self.guard.observe(seen)]

    def resume_or_report(self, message: ResumeTopic | ResumeAccount | GetGuard, now: int) -> list[Reply]:
        """The operator's resumes (the guard then judges afresh), and the guard's report."""
        if isinstance(message, ResumeTopic):
            resumed = writes.resume_topic(self.conn, message.corr_id, message.topic_id)
            if resumed.found:
                self.guard.topic_resumed(message.topic_id, now)
            return [(message.reply_to, resumed)]
        if isinstance(message, ResumeAccount):
            return self.guard.resume_account(message.corr_id, message.reply_to, now)
        return [(message.reply_to, self.guard.report(message.corr_id, now))]

    def hold(self, message: HoldTopicRows | HoldAddressRows, now: int) -> list[Reply]:
        """A cancel, pause or unsubscribe. The sender needs the answer too: it drops work
        claimed before this point. A hold the recorder asked for itself answers only the sender."""
        if isinstance(message, HoldTopicRows):
            held: Message = writes.hold_topic(self.conn, message, self.claims.seq)
        else:
            held = writes.hold_address(self.conn, message, self.claims.seq, now)
        if message.reply_to == "recorder":
            return [("sender", held)]
        return [(message.reply_to, held), ("sender", held)]

    def apply(self, message: Message, now: int) -> list[Reply]:
        conn = self.conn
        match message:
            case StoreMessages():
                return [(message.reply_to, writes.store_messages(conn, message, now))]
            case ClaimDue():
                return [(message.reply_to, claim_due(conn, message, self.claims))]
            case RecordOutcomes() | RecordEvents():
                return self.record(message, now)
            case HoldTopicRows() | HoldAddressRows():
                return self.hold(message, now)
            case ResumeTopic() | ResumeAccount() | GetGuard():
                return self.resume_or_report(message, now)
            case RecordOpens():
                return [(message.reply_to, events.record_opens(conn, message, self.tracking_key))]
            case ChangeSuppression():
                return [(message.reply_to, events.change_suppression(conn, message, now))]
            case Ping():
                conn.execute("SELECT 1").fetchone()
                return [(message.reply_to, Pong(message.corr_id))]
            case RequeueClaimed():
                return [(message.reply_to, Requeued(message.corr_id, writes.requeue_claimed(conn)))]
        raise TypeError(f"the recorder does not handle {describe(message)}")


def apply_batch(writer: Writer, log: logging.Logger, batch: list[Message], counts: Counter[str]) -> list[Reply]:
    """One transaction for the whole batch; one savepoint per request."""
    work = [m for m in batch if not isinstance(m, (EndOfStream, WakeUp))]
    if not work:
        return []
    conn, now = writer.conn, now_ms()
    replies: list[Reply] = []
    began = time.perf_counter()
    try:
        begin_writing(conn)
        writer.purge_if_due(now)
        for message in work:
            match message:
                case RecordEventsTogether():
                    replies.extend(apply_each(writer, log, message, now))
                case _:
                    replies.extend(apply_one(writer, log, message, now))
            counts[describe(message)] += 1
        conn.execute("COMMIT")
    except STORE_ERRORS as problem:
        log.error("commit failed, nothing in this batch was stored: %s", problem)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        metrics.TALLY.discard()
        return refuse_stores(work, f"the database cannot take writes: {problem}")
    metrics.COMMIT_LATENCY.observe(time.perf_counter() - began)
    metrics.TALLY.commit()
    return replies


def apply_one(writer: Writer, log: logging.Logger, message: Message, now: int) -> list[Reply]:
    """One request inside its own savepoint: whatever it raises, it is rolled back alone,
    logged once and answered with an error, and the rest of the batch goes on."""
    conn = writer.conn
    conn.execute("SAVEPOINT one")
    metrics.TALLY.mark()
    try:
        replies = writer.apply(message, now)
    except Exception as problem:  # no input may take the writer down with it
        conn.execute("ROLLBACK TO one")
        conn.execute("RELEASE one")
        metrics.TALLY.rollback_to_mark()
        log.error("%s failed and was rolled back: %s: %s", describe(message), type(problem).__name__, problem)
        refusal = refusal_for(message, problem)
        return [refusal] if refusal is not None else []
    conn.execute("RELEASE one")
    metrics.TALLY.release_mark()
    return replies


def apply_each(writer: Writer, log: logging.Logger, together: RecordEventsTogether, now: int) -> list[Reply]:
    """Notifications ingest handed over together: each in its own savepoint, exactly as if it
    had come alone (one that fails is rolled back alone), and one answer holding each's."""
    answers: dict[int, Message] = {}
    others: list[Reply] = []
    for item in together.items:
        for reply_to, reply in apply_one(writer, log, item, now):
            if reply_to == item.reply_to and getattr(reply, "corr_id", None) == item.corr_id:
                answers[item.corr_id] = reply
            else:
                others.append((reply_to, reply))  # the guard's word to the sender
    missing = Refused(0, Refusal.UNPROCESSABLE, "this notification could not be applied and was not stored")
    in_order = tuple(answers.get(item.corr_id, replace(missing, corr_id=item.corr_id)) for item in together.items)
    return [(together.reply_to, EventsRecordedTogether(together.corr_id, in_order)), *others]


def refusal_for(message: Message, problem: Exception) -> Reply | None:
    """The refusal for a failed request: a database error may pass, anything else will not."""
    reply_to, corr_id = getattr(message, "reply_to", None), getattr(message, "corr_id", None)
    if not isinstance(reply_to, str) or not isinstance(corr_id, int):
        return None
    if isinstance(problem, STORE_ERRORS) and not isinstance(problem, UNSTORABLE):
        return reply_to, Refused(corr_id, Refusal.STORAGE_ERROR, "the database could not apply this request; retry")
    return reply_to, Refused(corr_id, Refusal.UNPROCESSABLE, "this request could not be applied and was not stored")


def refuse_stores(work: list[Message], why: str) -> list[Reply]:
    """After a failed commit only stores get an answer; the others ask again."""
    return [
        (m.reply_to, Refused(m.corr_id, Refusal.STORAGE_UNAVAILABLE, why)) for m in work if isinstance(m, StoreMessages)
    ]


async def send_replies(ctx: StageContext, replies: list[Reply]) -> None:
    for reply_to, reply in replies:
        try:
            await ctx.outboxes[reply_to].put(reply, timeout_s=REPLY_TIMEOUT_S)
        except ChannelFull:
            ctx.log.warning("%s is not reading; dropped a %s", reply_to, describe(reply))
