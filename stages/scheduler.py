"""The scheduler: decides *when* a recipient goes to the sender.

It sleeps until CLAIM_AHEAD_MS before the earliest due time it knows of, or until a
message wakes it: ingest's `WorkAdded`, the sender's `Demand`, or the recorder's
`Claimed`. It claims work due by then in pages no larger than the sender's room
(credit-based backpressure), so a million scheduled recipients stay in SQLite and only
what the sender can use soon is in flight. At start it asks the database, so work due
during downtime is found.

Why ahead: the claim is a round trip and a commit (an fsync), and at the due second the
recorder may be busy; claimed at the due time, work reached SES 150-450 ms late under
load (bench/scale.py). Claimed ahead, it waits in the sender's ledger until it is due,
where a cancel, a pause or an unsubscribe takes it exactly like work queued behind the
rate: the hold protocol does not care how early the work arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.clock import now_ms
from pipeline.messages import ClaimDue, Claimed, Deliver, Demand, Message, WorkAdded
from pipeline.runtime import StageContext

PAGE_SIZE = 500
# How far ahead of its due time work is claimed (it is never sent before it is due).
CLAIM_AHEAD_MS = 1_000
# A claim that got no answer (the recorder restarted) is asked again after this.
CLAIM_TIMEOUT_S = 10.0


@dataclass(slots=True)
class SchedulerState:
    """What the scheduler knows; pure so tests can drive it without processes."""

    demand: int = 0
    # None: nothing pending; 0 at start: ask the database.
    next_due_ms: int | None = 0
    claim_sent_at_ms: int | None = None
    # The earliest WorkAdded seen while a claim was in flight (its answer may predate it).
    added_during_claim_ms: int | None = None
    claimed_total: int = 0

    def on_work_added(self, due_at_ms: int) -> None:
        self.next_due_ms = min_due(self.next_due_ms, due_at_ms)
        if self.claim_sent_at_ms is not None:
            self.added_during_claim_ms = min_due(self.added_during_claim_ms, due_at_ms)

    def on_claimed(self, claimed: Claimed) -> None:
        self.claim_sent_at_ms = None
        self.demand = max(0, self.demand - len(claimed.recipients))
        self.claimed_total += len(claimed.recipients)
        self.next_due_ms = min_due(claimed.next_due_ms, self.added_during_claim_ms)
        self.added_during_claim_ms = None

    def claim_limit(self, now: int) -> int:
        """How many to claim now (0: none)."""
        if self.claim_sent_at_ms is not None and now - self.claim_sent_at_ms < CLAIM_TIMEOUT_S * 1000:
            return 0
        if self.demand <= 0 or self.next_due_ms is None or self.next_due_ms > now + CLAIM_AHEAD_MS:
            return 0
        return min(self.demand, PAGE_SIZE)

    def sleep_s(self, now: int) -> float | None:
        """How long nothing can happen without a message (None: until one arrives)."""
        if self.claim_sent_at_ms is not None:
            return max(0.0, (self.claim_sent_at_ms + CLAIM_TIMEOUT_S * 1000 - now) / 1000)
        if self.demand <= 0 or self.next_due_ms is None:
            return None
        return max(0.0, (self.next_due_ms - CLAIM_AHEAD_MS - now) / 1000)


def min_due(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


async def run(ctx: StageContext) -> None:
    """Claim due work for the sender until told to stop."""
    state = SchedulerState()
    ctx.ready()
    recorder = ctx.outboxes["recorder"]
    corr_ids = iter(range(1, 2**62))
    while not ctx.stopping.is_set():
        now = now_ms()
        limit = state.claim_limit(now)
        if limit:
            state.claim_sent_at_ms = now
            await recorder.put(ClaimDue(next(corr_ids), "scheduler", limit, now + CLAIM_AHEAD_MS))
            continue
        wait_s = state.sleep_s(now)
        message = await ctx.inbox.get() if wait_s is None else await ctx.inbox.get_within(wait_s)
        if message is not None:
            await handle(ctx, state, message)
    ctx.log.info("scheduler done: %d recipient(s) claimed", state.claimed_total)


async def handle(ctx: StageContext, state: SchedulerState, message: Message) -> None:
    match message:
        case Demand(count=count):
            state.demand += count
        case WorkAdded(due_at_ms=due):
            state.on_work_added(due)
        case Claimed(recipients=recipients, claim_seq=claim_seq):
            state.on_claimed(message)
            if recipients:
                await ctx.outboxes["sender"].put(Deliver(recipients, claim_seq))
        case _:
            pass  # WakeUp (stopping) or a stray reply
