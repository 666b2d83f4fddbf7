"""The Sender: paces, sends, retries, and hands outcomes to the recorder.

Accounting that the reliability contract rests on:
- `held`: recipients received from the scheduler whose outcome the recorder has not
  acknowledged. The sender asks for more (`Demand`) only while `held < capacity`.
- `slots`: a recipient takes a slot before its SES call and gives it back only when
  the recorder has acknowledged its outcome. So after a kill -9, at most
  `in_flight_limit` recipients can have reached SES without a recorded outcome:
  that is the documented bound on duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.backoff import jittered_backoff_s
from pipeline.channels import ChannelFull
from pipeline.clock import now_ms
from pipeline.gate import SendGate
from pipeline.limiter import RateLimiter
from pipeline.mail import MailNotBuildable, build
from pipeline.messages import (
    Deliver,
    Demand,
    EndOfStream,
    GetQuota,
    HoldTopic,
    HoldTopicRows,
    Message,
    Outcome,
    OutcomesRecorded,
    QuotaReport,
    Recipient,
    RecordOutcomes,
    Released,
    SendFailed,
    Sent,
    TopicHeld,
)
from pipeline.runtime import StageContext
from pipeline.ses import CURRENT_RECIPIENT, MailBackend, SendWithdrawn
from pipeline.ses_errors import Classified, Verdict, classify
from stages.sender.contents import ContentCache

OUTCOME_BATCH = 200
OUTCOME_GATHER_S = 0.005
ACK_TIMEOUT_S = 5.0
ACCOUNT_PAUSE_S = 60.0
THROTTLE_RETRY_MIN_S = 0.5
THROTTLE_RETRY_MAX_S = 30.0
DRAIN_MARGIN_S = 1.0


@dataclass(slots=True)
class Unacked:
    sent_at: float
    outcomes: tuple[Outcome, ...]
    slots: int


@dataclass(slots=True)
class Sender:
    ctx: StageContext
    backend: MailBackend
    contents: ContentCache
    limiter: RateLimiter
    pixel: Callable[[int], str]
    in_flight_limit: int
    gate: SendGate = field(default_factory=SendGate)
    ready: deque[Recipient] = field(default_factory=deque)
    retries: list[tuple[float, int, Recipient]] = field(default_factory=list)
    attempts: Counter[int] = field(default_factory=Counter)
    outcomes: list[Outcome] = field(default_factory=list)
    unacked: dict[int, Unacked] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    held: int = 0
    promised: int = 0
    # Recipients in an SES call right now, by id; `admitted` of them have left for SES.
    calling: dict[int, Recipient] = field(default_factory=dict)
    admitted: set[int] = field(default_factory=set)
    # In a call but held before admission: the admission check stops them.
    withdrawn: set[int] = field(default_factory=set)
    # Topics being held (cancel/pause) until the recorder confirms: arrivals wait here.
    parked: dict[str, list[tuple[int, Recipient]]] = field(default_factory=dict)
    # Work of a topic claimed before this claim_seq was held (cancelled or paused): drop it.
    cut_seq: dict[str, int] = field(default_factory=dict)
    # Sends the 24-hour quota still allows, as a total of counts["sent"] (see watch_quota).
    quota_budget: float = float("inf")
    quota_held: bool = False
    # The last GetAccount answer (or why there is none), for GET /v1/events/counts/sent.
    last_quota: tuple[float, float, float] | None = None
    quota_error: str | None = "not read yet"
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _work: asyncio.Event = field(default_factory=asyncio.Event)
    _flush: asyncio.Event = field(default_factory=asyncio.Event)
    _quota_changed: asyncio.Event = field(default_factory=asyncio.Event)
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.in_flight_limit)

    @property
    def capacity(self) -> int:
        """How many recipients we hold at most: the in-flight ones plus as many queued."""
        return self.in_flight_limit * 2

    # --- the stage's life ----------------------------------------------------------------

    async def serve(self) -> None:
        """Send until stopping, then drain: finish calls, release the rest, flush, EndOfStream."""
        self.ask_for_work()
        dispatcher = asyncio.create_task(self.dispatch(), name="dispatch")
        flusher = asyncio.create_task(self.flush_loop(), name="flush")
        try:
            while not self.ctx.stopping.is_set():
                self.on_message(await self.ctx.inbox.get())
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
            await self.drain()
        finally:
            dispatcher.cancel()
            flusher.cancel()
            await self.end_streams()
        self.ctx.log.info("sender done: %s", dict(self.counts) or "nothing sent")

    def on_message(self, message: Message) -> None:
        match message:
            case Deliver(recipients=recipients, claim_seq=claim_seq):
                self.on_deliver(recipients, claim_seq)
            case OutcomesRecorded(corr_id=corr_id):
                self.on_ack(corr_id)
            case HoldTopic():
                self.on_hold(message)
            case TopicHeld():
                self.on_held(message)
            case GetQuota(corr_id=corr_id, reply_to=reply_to):
                report = QuotaReport(corr_id, self.last_quota, None if self.last_quota else self.quota_error)
                self.ctx.outboxes[reply_to].put_nowait(report)
            case _:
                pass  # WakeUp: the loop re-checks `stopping`

    def on_deliver(self, recipients: tuple[Recipient, ...], claim_seq: int) -> None:
        self.promised = max(0, self.promised - len(recipients))
        kept = []
        for recipient in recipients:
            topic = recipient.topic_id
            if claim_seq < self.cut_seq.get(topic, 0):
                continue  # claimed before its topic was held: the recorder already moved it
            if topic in self.parked:
                self.parked[topic].append((claim_seq, recipient))
            kept.append(recipient)
        self.held += len(kept)
        if self.ctx.stopping.is_set():
            self.outcomes.extend(Released(r.recipient_id) for r in kept)
            self._flush.set()
            return
        self.ready.extend(r for r in kept if r.topic_id not in self.parked)
        self._work.set()

    def on_hold(self, request: HoldTopic) -> None:
        """Stop all work on a topic that has not reached SES, then let the recorder hold the rest."""
        topic = request.topic_id
        taken = self.take_topic(topic)
        self.parked.setdefault(topic, [])
        # Calls that have not passed admission are withdrawn: they are held with the rest.
        withdrawing = {r.recipient_id for r in self.calls_of(topic)} - self.admitted
        self.withdrawn |= withdrawing
        # Rows that may already be at SES keep their status; their outcome decides it.
        keep = set(self.calling) - withdrawing
        keep.update(o.recipient_id for o in self.outcomes)
        keep.update(o.recipient_id for entry in self.unacked.values() for o in entry.outcomes)
        self.held -= len(taken)
        self.ask_for_work()
        rows = HoldTopicRows(request.corr_id, request.reply_to, topic, request.hold, tuple(sorted(keep)))
        if not self.ctx.outboxes["recorder"].put_nowait(rows):
            self.ctx.log.warning("the recorder is not taking messages; the hold of a topic waits for a retry")

    def calls_of(self, topic: str) -> list[Recipient]:
        return [r for r in self.calling.values() if r.topic_id == topic]

    async def admit(self) -> None:
        """The wire-level check, run right before a request leaves: the rolling-window cap,
        then whether the recipient was held while it waited."""
        await self.limiter.admit()
        recipient_id = CURRENT_RECIPIENT.get(None)
        if recipient_id is None:
            return
        if recipient_id in self.withdrawn:
            raise SendWithdrawn(recipient_id)
        self.admitted.add(recipient_id)

    def take_topic(self, topic: str) -> list[Recipient]:
        """Remove a topic's recipients from the queue and the retry heap."""
        taken = [r for r in self.ready if r.topic_id == topic]
        taken += [entry[2] for entry in self.retries if entry[2].topic_id == topic]
        if taken:
            self.ready = deque(r for r in self.ready if r.topic_id != topic)
            self.retries = [entry for entry in self.retries if entry[2].topic_id != topic]
            heapq.heapify(self.retries)
        return taken

    def on_held(self, held: TopicHeld) -> None:
        """The recorder held the topic at `claim_seq`: parked work claimed before that is dropped."""
        self.cut_seq[held.topic_id] = max(self.cut_seq.get(held.topic_id, 0), held.claim_seq + 1)
        parked = self.parked.pop(held.topic_id, [])
        fresh = [r for seq, r in parked if seq > held.claim_seq]
        self.held -= len(parked) - len(fresh)
        self.ready.extend(fresh)
        self._work.set()
        self.ask_for_work()

    def ask_for_work(self) -> None:
        """Tell the scheduler how much more we can hold, in chunks worth a message."""
        room = self.capacity - self.held - self.promised
        worth_asking = room >= max(1, self.capacity // 4) and not self.ctx.stopping.is_set()
        if worth_asking and self.ctx.outboxes["scheduler"].put_nowait(Demand(room)):
            self.promised += room

    # --- dispatching -----------------------------------------------------------------------

    async def dispatch(self) -> None:
        """Wait for work, a slot, the gate and the limiter, in that order; then send one."""
        while True:
            await self.wait_for_work()
            await self.wait_for_quota()
            await self.slots.acquire()
            try:
                await self.gate.wait_open()
                await self.limiter.pace()
            except asyncio.CancelledError:
                self.slots.release()
                raise
            recipient = self.pop_next()
            if recipient is None:
                self.slots.release()
                continue
            self.calling[recipient.recipient_id] = recipient
            task = asyncio.create_task(self.send_one(recipient))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def wait_for_work(self) -> None:
        while True:
            if self.ready or (self.retries and self.retries[0][0] <= time.monotonic()):
                return
            timeout = self.retries[0][0] - time.monotonic() if self.retries else None
            self._work.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), timeout)

    async def wait_for_quota(self) -> None:
        """Hold the backlog while the 24-hour quota is used up, instead of failing it."""
        while self.counts["sent"] + len(self.tasks) >= self.quota_budget:
            if not self.quota_held:
                self.quota_held = True
                self.ctx.log.warning("the SES 24-hour quota is used up; holding the backlog until it frees")
            self._quota_changed.clear()
            await self._quota_changed.wait()
        if self.quota_held:
            self.quota_held = False
            self.ctx.log.info("SES quota available again; sending")

    def set_quota_remaining(self, remaining: float) -> None:
        """What GetAccount says is left, counted from the sends acknowledged so far.

        Calls in flight are not added back: SES may not have counted them yet, and
        assuming it had let a refresh mid-send go past the quota. At the edge this holds
        up to the in-flight count back until the next refresh shows the true figure.
        """
        self.quota_budget = self.counts["sent"] + remaining
        self._quota_changed.set()

    def pop_next(self) -> Recipient | None:
        if self.retries and self.retries[0][0] <= time.monotonic():
            return heapq.heappop(self.retries)[2]
        return self.ready.popleft() if self.ready else None

    async def send_one(self, recipient: Recipient) -> None:
        rid = recipient.recipient_id
        token = CURRENT_RECIPIENT.set(rid)
        try:
            await self.call_ses(recipient)
        except SendWithdrawn:
            # Held by the recorder with its topic and counted there; never sent.
            self.held -= 1
            self.slots.release()
            self.ask_for_work()
        finally:
            CURRENT_RECIPIENT.reset(token)
            self.admitted.discard(rid)
            self.withdrawn.discard(rid)
            self.calling.pop(rid, None)

    async def call_ses(self, recipient: Recipient) -> None:
        try:
            content = self.contents.get(recipient.content_id)
            try:
                mail = build(
                    content,
                    recipient.recipient_id,
                    recipient.email,
                    recipient.topic_id,
                    self.pixel(recipient.recipient_id),
                )
            except (ValueError, TypeError) as problem:
                raise MailNotBuildable(f"the message cannot be built: {problem}") from None
            message_id = await self.backend.send(mail)
        except SendWithdrawn:
            raise
        except LookupError as missing:
            self.add_outcome(SendFailed(recipient.recipient_id, "ContentMissing", str(missing), now_ms()))
            return
        except Exception as error:  # every failure is classified; none escapes the task
            self.on_send_error(recipient, classify(error))
            return
        self.limiter.on_success(time.monotonic())
        self.gate.on_success()
        self.attempts.pop(recipient.recipient_id, None)
        self.counts["sent"] += 1
        self.add_outcome(Sent(recipient.recipient_id, message_id, now_ms()))

    def on_send_error(self, recipient: Recipient, error: Classified) -> None:
        now = time.monotonic()
        self.counts[error.verdict.value] += 1
        if error.verdict is Verdict.PERMANENT:
            self.attempts.pop(recipient.recipient_id, None)
            self.add_outcome(SendFailed(recipient.recipient_id, error.code, error.message, now_ms()))
            return
        self.slots.release()  # not sent: the slot is free again now
        if error.verdict is Verdict.THROTTLED:
            self.limiter.on_throttled(now)
            self.attempts[recipient.recipient_id] += 1
            delay = jittered_backoff_s(
                self.attempts[recipient.recipient_id], THROTTLE_RETRY_MIN_S, THROTTLE_RETRY_MAX_S
            )
            heapq.heappush(self.retries, (now + delay, next(self._seq), recipient))
        else:
            if error.verdict is Verdict.ACCOUNT_PAUSED:
                self.gate.pause(now, ACCOUNT_PAUSE_S, error.code)
            else:
                self.gate.on_transient_failure(now, error.code)
            if self.gate.failures in (1, 10, 100) or error.verdict is Verdict.ACCOUNT_PAUSED:
                self.ctx.log.warning(
                    "SES %s (%s): pausing all sending for %.1fs",
                    error.verdict.value,
                    error.code,
                    self.gate.pause_s(now),
                )
            self.ready.appendleft(recipient)
        self._work.set()

    # --- outcomes --------------------------------------------------------------------------

    def add_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self._flush.set()

    async def flush_loop(self) -> None:
        """Send outcomes in batches; resend any the recorder has not acknowledged in time."""
        while True:
            timeout = ACK_TIMEOUT_S if self.unacked else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush.wait(), timeout)
            self._flush.clear()
            if len(self.outcomes) < OUTCOME_BATCH:
                await asyncio.sleep(OUTCOME_GATHER_S)  # let a few more join this batch
            await self.flush()
            await self.resend_stale()

    async def flush(self) -> None:
        while self.outcomes:
            batch = tuple(self.outcomes[:OUTCOME_BATCH])
            del self.outcomes[:OUTCOME_BATCH]
            corr_id = next(self._seq)
            slots = sum(1 for o in batch if not isinstance(o, Released))
            self.unacked[corr_id] = Unacked(time.monotonic(), batch, slots)
            await self.ctx.outboxes["recorder"].put(RecordOutcomes(corr_id, "sender", batch))

    async def resend_stale(self) -> None:
        """Recording is idempotent (only `sending` rows change), so a resend is safe."""
        now = time.monotonic()
        for corr_id, entry in list(self.unacked.items()):
            if now - entry.sent_at >= ACK_TIMEOUT_S:
                entry.sent_at = now
                await self.ctx.outboxes["recorder"].put(RecordOutcomes(corr_id, "sender", entry.outcomes))

    def on_ack(self, corr_id: int) -> None:
        entry = self.unacked.pop(corr_id, None)
        if entry is None:
            return
        for _ in range(entry.slots):
            self.slots.release()
        self.held -= len(entry.outcomes)
        self.ask_for_work()

    # --- shutdown --------------------------------------------------------------------------

    async def drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.ctx.settings.shutdown_timeout_s - DRAIN_MARGIN_S, 0.2)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=max(0.0, deadline - loop.time()))
        unsent = [*self.ready, *(entry[2] for entry in self.retries)]
        self.ready.clear()
        self.retries.clear()
        self.outcomes.extend(Released(r.recipient_id) for r in unsent)
        await self.flush()
        while self.unacked and (left := deadline - loop.time()) > 0:
            message = await self.ctx.inbox.get_within(left)
            if message is not None:
                self.on_message(message)
                await self.flush()
        if self.unacked:
            self.ctx.log.warning("%d outcome batch(es) not acknowledged at exit", len(self.unacked))

    async def end_streams(self) -> None:
        for name in ("recorder", "scheduler"):
            try:
                await self.ctx.outboxes[name].put(EndOfStream("sender"), timeout_s=0.5)
            except ChannelFull:
                self.ctx.log.warning("could not tell %s that the sender stopped", name)
