"""With PostgreSQL, the sender sends only while this node holds the sender lock.

Until it does, the sender stands by: it answers what reaches it (a hold cannot be carried
out here, since another node may have the topic's calls at SES; the quota is not read
here) and asks for no work, so the scheduler claims nothing on this node. Once it holds
the lock it waits out `grace_s` (the time an earlier holder that lost its session needs
to notice and stop), asks the recorder to put back what earlier senders left
`sending`, and only then sends. While it sends, it checks every `failover_s / 5` that it
still holds the lock; when it cannot show that, the process ends at once: no call may
leave a node that may no longer be the sender (docs/postgresql.md).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable

from pipeline.clock import now_ms
from pipeline.db.leadership import TRIES_PER_FAILOVER, SenderLock
from pipeline.exitcodes import ExitCode
from pipeline.messages import (
    GetQuota,
    GuardState,
    HoldAddress,
    HoldTopic,
    Message,
    QuotaReport,
    Refusal,
    Refused,
    RequeueClaimed,
    Requeued,
)
from pipeline.runtime import StageContext

REQUEUE_TIMEOUT_S = 10.0
_corr_ids = itertools.count(1)


def grace_s(failover_s: float) -> float:
    """How long an earlier holder may go on before it notices it lost the lock: one check and its timeout."""
    return 2 * failover_s / TRIES_PER_FAILOVER


async def stand_by(ctx: StageContext, lock: SenderLock, guard: Callable[[str | None], None]) -> list[Message] | None:
    """Wait for the lock, answering meanwhile; then put back earlier claims. None: stopping first.

    What arrives after the lock is held (a hold, a quota question) is kept, not refused, and
    returned: the sender takes it first thing, as if it had just arrived."""
    said = False
    while not ctx.stopping.is_set():
        if await lock.try_once():
            break
        if not said:
            ctx.log.info("standing by: another node sends (trying for the sender lock every %.1f s)", lock.every_s)
            said = True
        deadline = asyncio.get_running_loop().time() + lock.every_s
        while not ctx.stopping.is_set() and (left := deadline - asyncio.get_running_loop().time()) > 0:
            message = await ctx.inbox.get_within(left)
            if message is not None:
                answer_standing_by(ctx, message, guard)
    else:
        return None
    ctx.log.warning("this node now holds the sender lock; taking over in %.1f s", grace_s(lock.failover_s))
    kept: list[Message] = []
    deadline = asyncio.get_running_loop().time() + grace_s(lock.failover_s)
    while not ctx.stopping.is_set() and (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await ctx.inbox.get_within(left)
        if message is not None:
            kept.append(message)
    return kept if await requeue_claimed(ctx, kept) else None


async def requeue_claimed(ctx: StageContext, kept: list[Message]) -> bool:
    """Ask this node's recorder to put back what was left `sending`, and wait for its answer."""
    while not ctx.stopping.is_set():
        corr_id = next(_corr_ids)
        await ctx.outboxes["recorder"].put(RequeueClaimed(corr_id, "sender"))
        deadline = asyncio.get_running_loop().time() + REQUEUE_TIMEOUT_S
        while (left := deadline - asyncio.get_running_loop().time()) > 0 and not ctx.stopping.is_set():
            message = await ctx.inbox.get_within(left)
            if isinstance(message, Requeued) and message.corr_id == corr_id:
                if message.count:
                    ctx.log.warning("requeued %d recipient(s) an earlier sender left claimed", message.count)
                return True
            if message is not None:
                kept.append(message)
    return False


def answer_standing_by(ctx: StageContext, message: Message, guard: Callable[[str | None], None]) -> None:
    """What a sender that does not send says to what reaches it."""
    match message:
        case HoldTopic(corr_id=corr_id, reply_to=reply_to) | HoldAddress(corr_id=corr_id, reply_to=reply_to):
            if reply_to != "recorder":  # the guard's own pause: the sending node's guard makes it
                why = "this node does not send; ask the node that sends (GET /ready names it)"
                ctx.outboxes[reply_to].put_nowait(Refused(corr_id, Refusal.NOT_SENDING, why))
        case GetQuota(corr_id=corr_id, reply_to=reply_to):
            why = "this node stands by: the node that sends reads the quota"
            ctx.outboxes[reply_to].put_nowait(QuotaReport(corr_id, None, why))
        case GuardState(reason=reason):
            guard(reason)
        case _:
            pass  # WakeUp, or a stray reply


async def watch_lock(ctx: StageContext, lock: SenderLock) -> None:
    """End the process the moment this node cannot show it still holds the sender lock."""
    while True:
        await asyncio.sleep(lock.every_s)
        if not await lock.still_held():
            ctx.log.error("lost the sender lock at %d: stopping at once so that only one node sends", now_ms())
            os._exit(int(ExitCode.CRASH))
