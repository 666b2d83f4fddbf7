"""The Sender: the async shell around the Ledger. It paces, sends, retries, and hands outcomes to the recorder.

The bookkeeping the reliability contract rests on (what the sender holds, slots held
from the SES call until the recorder acknowledges its outcome, holds of a topic) lives
in `ledger.Ledger`, which takes events and returns effects. This module reads the inbox,
runs the dispatch loop, makes the SES calls, keeps the timers (outcome gathering, ack
timeouts, retry backoff, the quota wait) and logs; it turns each `Effects` into messages
and wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline import metrics
from pipeline.backoff import jittered_backoff_s
from pipeline.clock import now_ms
from pipeline.gate import SendGate
from pipeline.limiter import RateLimiter
from pipeline.mail import (
    MailNotBuildable,
    OutgoingMail,
    PreparedTemplate,
    Tracking,
    Unsubscribe,
    build,
    build_personal,
)
from pipeline.messages import (
    AddressHeld,
    Deliver,
    Demand,
    GetQuota,
    GuardState,
    HoldAddress,
    HoldTopic,
    Message,
    OutcomesRecorded,
    QuotaReport,
    Recipient,
    SendFailed,
    Sent,
    TopicHeld,
)
from pipeline.runtime import StageContext
from pipeline.ses import CURRENT_CALL, BulkUnsupported, MailBackend, SendWithdrawn
from pipeline.ses_bulk import BulkEntry, EntrySent, partition
from pipeline.ses_errors import Classified, Verdict, classify
from pipeline.wire_stamp import WIRE_STAMP
from stages.sender.contents import ContentCache
from stages.sender.ledger import OUTCOME_BATCH, Effects, Ledger

OUTCOME_GATHER_S = 0.005
ACK_TIMEOUT_S = 5.0
ACCOUNT_PAUSE_S = 60.0
THROTTLE_RETRY_MIN_S = 0.5
THROTTLE_RETRY_MAX_S = 30.0
DRAIN_MARGIN_S = 1.0


@dataclass(slots=True)
class Sender:
    ctx: StageContext
    backend: MailBackend
    contents: ContentCache
    limiter: RateLimiter
    pixel: Callable[[int], str]
    # A recipient's unsubscribe link and list headers, from its row id and its message's list.
    unsubscribe: Callable[[int, str | None], Unsubscribe]
    in_flight_limit: int
    # What click links are signed with (None: tests that send no tracked mail).
    tracking: Tracking | None = None
    gate: SendGate = field(default_factory=SendGate)
    ledger: Ledger = field(init=False)
    # Throttles in a row per recipient: the retry policy's input, not bookkeeping.
    attempts: Counter[int] = field(default_factory=Counter)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    # Logged once per stretch of the 24-hour quota being used up.
    quota_held: bool = False
    # Why the reputation guard holds all sending (the recorder says), or None.
    guard_hold: str | None = None
    # The last GetAccount answer (or why there is none), for GET /v1/events/counts/sent.
    last_quota: tuple[float, float, float] | None = None
    last_account: tuple[str | None, bool | None, bool | None] | None = None
    quota_error: str | None = "not read yet"
    _work: asyncio.Event = field(default_factory=asyncio.Event)
    _flush: asyncio.Event = field(default_factory=asyncio.Event)
    _slot_freed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.in_flight_limit)

    # --- the stage's life ----------------------------------------------------------------

    async def serve(self) -> None:
        """Send until stopping, then drain: finish calls, release the rest, flush (the runtime says EndOfStream)."""
        self.ask_for_work(self.ledger.demand())
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
        self.ctx.log.info("sender done: %s", dict(self.counts) or "nothing sent")

    def on_message(self, message: Message) -> None:
        match message:
            case Deliver(recipients=recipients, claim_seq=claim_seq):
                self.on_deliver(recipients, claim_seq)
            case OutcomesRecorded(corr_id=corr_id):
                self.apply(self.ledger.ack(corr_id))
            case HoldTopic() | HoldAddress():
                self.apply(self.ledger.hold(message))
            case TopicHeld() | AddressHeld():
                self.apply(self.ledger.hold_answered(message))
            case GuardState(reason=reason):
                if reason is not None and reason != self.guard_hold:
                    self.ctx.log.warning("the reputation guard holds all sending: %s", reason)
                self.guard_hold = reason
                self._work.set()
            case GetQuota(corr_id=corr_id, reply_to=reply_to):
                error = None if self.last_quota else self.quota_error
                rate = (self.limiter.rate, self.limiter.ceiling)
                report = QuotaReport(corr_id, self.last_quota, error, self.last_account, rate)
                self.ctx.outboxes[reply_to].put_nowait(report)
            case _:
                pass  # WakeUp: the loop re-checks `stopping`

    def on_deliver(self, recipients: tuple[Recipient, ...], claim_seq: int) -> None:
        # Work arriving while stopping goes straight back to pending.
        stopping = self.ctx.stopping.is_set()
        # The wall clock first: read before the monotonic one (and floored to the ms), it can
        # only place a due time later on the monotonic clock, never earlier.
        wall_ms = now_ms()
        self.apply(self.ledger.deliver(recipients, claim_seq, stopping, now=time.monotonic(), now_ms=wall_ms))

    def apply(self, effects: Effects) -> None:
        """Carry out what the ledger decided: messages out, and wake whoever waits."""
        if effects.hold_rows is not None and not self.ctx.outboxes["recorder"].put_nowait(effects.hold_rows):
            self.ctx.log.warning("the recorder is not taking messages; the hold of a topic waits for a retry")
        if effects.demand:
            self.ask_for_work(effects.demand)
        if effects.freed:
            self._slot_freed.set()
        if effects.work:
            self._work.set()
        if effects.flush:
            self._flush.set()

    def ask_for_work(self, room: int) -> None:
        """Tell the scheduler how much more we can hold (the ledger says when it is worth a message)."""
        if room and not self.ctx.stopping.is_set() and self.ctx.outboxes["scheduler"].put_nowait(Demand(room)):
            self.ledger.promise(room)

    async def admit(self) -> None:
        """The wire-level check, run right before a request leaves: the rolling-window cap for
        every recipient in the call, then whether any of them was held while it waited."""
        call = CURRENT_CALL.get(())
        sent = await self.limiter.admit(max(1, len(call)))
        if call and (held := self.ledger.admit_call(call)):
            raise SendWithdrawn(held)
        WIRE_STAMP.set(functools.partial(self.limiter.restamp, sent))

    # --- dispatching -----------------------------------------------------------------------

    async def dispatch(self) -> None:
        """Wait for work, a slot, the gate and the limiter, in that order; then start one call,
        of as many recipients as the rate of the moment, the free slots and the quota allow."""
        while True:
            await self.wait_for_work()
            await self.wait_for_guard()
            await self.wait_for_quota()
            await self.wait_for_slot()
            await self.gate.wait_open()
            await self.limiter.wait_due()
            # Only this loop takes slots, so the ones seen free above are still free.
            most = self.ledger.call_room(self.limiter.batch_size(self.backend.bulk_max))
            if most == 0:
                continue  # the quota ran out while we waited: wait_for_quota holds the backlog
            batch = self.ledger.start_batch(time.monotonic(), most)
            if not batch:
                continue
            self.limiter.take_pace(self.limiter.clock(), len(batch))
            if due := min(r.due_at_ms for r in batch):  # 0: made without a due time (tests)
                metrics.LATENESS.observe(max(0, now_ms() - due) / 1000)
            task = asyncio.create_task(self.send_call(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def wait_for_work(self) -> None:
        while (delay := self.ledger.work_delay_s(time.monotonic())) != 0.0:
            self._work.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), delay)

    async def wait_for_slot(self) -> None:
        while not self.ledger.can_start():
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def wait_for_guard(self) -> None:
        """Hold everything while the account's bounce or complaint rate is over the guard's limit."""
        while self.guard_hold is not None:
            self._work.clear()
            await self._work.wait()

    async def wait_for_quota(self) -> None:
        """Hold the backlog while the 24-hour quota is used up, instead of failing it."""
        while not self.ledger.quota_allows():
            if not self.quota_held:
                self.quota_held = True
                self.ctx.log.warning("the SES 24-hour quota is used up; holding the backlog until it frees")
            self._work.clear()
            await self._work.wait()
        if self.quota_held:
            self.quota_held = False
            self.ctx.log.info("SES quota available again; sending")

    def set_quota_remaining(self, remaining: float) -> None:
        """What GetAccount says is left (the ledger keeps the budget)."""
        self.apply(self.ledger.quota_change(remaining))

    # --- calls ---------------------------------------------------------------------------

    async def send_call(self, batch: list[Recipient]) -> None:
        """Build each recipient's mail, then send: one SendBulkEmail for those that fit in
        one, SendEmail for a lone recipient and for a mail a bulk entry cannot carry."""
        metrics.IN_FLIGHT.inc(len(batch))
        metrics.RATE_LIMIT.set(self.limiter.rate)
        try:
            await self.send_mails(batch)
        finally:
            metrics.IN_FLIGHT.dec(len(batch))

    async def send_mails(self, batch: list[Recipient]) -> None:
        mails: dict[int, tuple[Recipient, OutgoingMail]] = {}
        unreadable: list[Recipient] = []
        problem: Classified | None = None
        for recipient in batch:
            built = self.build_mail(recipient)
            if isinstance(built, OutgoingMail):
                mails[recipient.recipient_id] = (recipient, built)
            elif built is not None:
                unreadable.append(recipient)
                problem = built
        if problem is not None:
            self.on_call_failed(unreadable, problem)
        if len(mails) <= 1 or self.backend.bulk_max == 1:
            await asyncio.gather(*(self.send_single(r, mail) for r, mail in mails.values()))
            return
        entries, alone = partition(mail for _, mail in mails.values())
        for single in alone:
            self.ctx.log.debug("recipient %d goes out alone: %s", single.mail.recipient_id, single.reason)
        calls = [self.send_single(*mails[single.mail.recipient_id]) for single in alone]
        if len(entries) == 1:
            calls.append(self.send_single(*mails[entries[0].mail.recipient_id]))
        elif entries:
            calls.append(self.send_bulk([mails[e.mail.recipient_id][0] for e in entries], entries))
        await asyncio.gather(*calls)

    def build_mail(self, recipient: Recipient) -> OutgoingMail | Classified | None:
        """The recipient's mail; None when it cannot be built (then it has failed, for good);
        the trouble when its content could not be read just now (it goes again)."""
        rid = recipient.recipient_id
        try:
            content = self.contents.get(recipient.content_id)
            link = self.unsubscribe(rid, content.list_id)
            pixel = self.pixel(rid)
            if isinstance(content, PreparedTemplate):
                return build_personal(
                    content, rid, recipient.email, recipient.topic_id, recipient.data, pixel, link, self.tracking
                )
            return build(content, rid, recipient.email, recipient.topic_id, pixel, link, self.tracking)
        except LookupError as missing:
            metrics.FAILED.labels("ContentMissing").inc()
            self.apply(self.ledger.record(SendFailed(rid, "ContentMissing", str(missing), now_ms())))
        except MailNotBuildable as problem:
            self.fail(recipient, classify(problem))
        except (ValueError, TypeError) as problem:
            self.fail(recipient, classify(MailNotBuildable(f"the message cannot be built: {problem}")))
        except Exception as problem:  # the content's read failed (a locked or unreadable file): retried
            return classify(problem)
        return None

    async def send_single(self, recipient: Recipient, mail: OutgoingMail) -> None:
        token = CURRENT_CALL.set((recipient.recipient_id,))
        operation = "SendEmail" if self.backend.name == "ses" else self.backend.name
        started = time.perf_counter()
        try:
            with metrics.CALLS_IN_FLIGHT.track_inprogress():
                message_id = await self.backend.send(mail)
        except SendWithdrawn:
            # Held by the recorder with its topic and counted there; never sent.
            self.apply(self.ledger.withdraw(recipient.recipient_id))
        except Exception as error:  # every failure is classified; none escapes the task
            call_done(operation, started, ok=False)
            self.on_call_failed([recipient], classify(error))
        else:
            call_done(operation, started, ok=True)
            self.on_sent(recipient.recipient_id, message_id)
        finally:
            CURRENT_CALL.reset(token)

    async def send_bulk(self, recipients: list[Recipient], entries: list[BulkEntry]) -> None:
        token = CURRENT_CALL.set(tuple(r.recipient_id for r in recipients))
        started = time.perf_counter()
        try:
            with metrics.CALLS_IN_FLIGHT.track_inprogress():
                outcomes = await self.backend.send_bulk(entries)
        except SendWithdrawn as held:
            # None of the call left: the held ones are withdrawn, the rest go back to the front.
            for recipient in reversed(recipients):
                rid = recipient.recipient_id
                self.apply(self.ledger.withdraw(rid) if rid in held.recipient_ids else self.ledger.requeue(rid))
            return
        except BulkUnsupported as problem:
            self.ctx.log.warning("SendBulkEmail is not available here (%s): sending one SendEmail each", problem)
            await self.send_each_alone(recipients, entries)
            return
        except Exception as error:  # an error of the whole call applies to every entry in it
            call_done("SendBulkEmail", started, ok=False)
            verdict = classify(error)
            if verdict.verdict is Verdict.PERMANENT:
                # A refusal of the whole call may be one entry's fault (one unverified address in
                # the sandbox, say): each goes out alone, and SES judges each as SendEmail would.
                self.ctx.log.info("SES refused a bulk call (%s): sending its %d alone", verdict.code, len(entries))
                await self.send_each_alone(recipients, entries)
            else:
                self.on_call_failed(recipients, verdict)
            return
        finally:
            CURRENT_CALL.reset(token)
        call_done("SendBulkEmail", started, ok=True)
        by_id = {r.recipient_id: r for r in recipients}
        failed = [(by_id[o.recipient_id], o.error) for o in outcomes if not isinstance(o, EntrySent)]
        if failed:  # before the successes, so that a throttle cuts the rate the successes would raise
            self.on_entries_failed(failed)
        for outcome in outcomes:
            if isinstance(outcome, EntrySent):
                self.on_sent(outcome.recipient_id, outcome.message_id)

    async def send_each_alone(self, recipients: list[Recipient], entries: list[BulkEntry]) -> None:
        """The call's recipients, each in a SendEmail of its own (each admitted again at the wire)."""
        await asyncio.gather(*(self.send_single(r, e.mail) for r, e in zip(recipients, entries, strict=True)))

    # --- what SES answered ------------------------------------------------------------------

    def on_sent(self, recipient_id: int, message_id: str) -> None:
        self.limiter.on_success(time.monotonic())
        self.gate.on_success()
        self.attempts.pop(recipient_id, None)
        self.counts["sent"] += 1
        metrics.SENT.inc()
        self.apply(self.ledger.record(Sent(recipient_id, message_id, now_ms())))

    def on_call_failed(self, recipients: list[Recipient], error: Classified) -> None:
        """A call failed as a whole (a SendEmail, or a SendBulkEmail before any entry's
        result): the verdict applies to each recipient in it, and the rate and the gate react once."""
        now = time.monotonic()
        if error.verdict is Verdict.THROTTLED:
            self.limiter.on_throttled(now)
        elif error.verdict is not Verdict.PERMANENT:
            self.pause_sending(error, now)
        for recipient in reversed(recipients):  # each goes to the front: reversed keeps their order
            self.settle(recipient, error, now, retry_transient=False)

    def on_entries_failed(self, failed: list[tuple[Recipient, Classified]]) -> None:
        """Entries of a bulk call that SES answered with a failed Status. SES did answer, so a
        transient status retries that recipient alone after a backoff, without pausing the rest."""
        now = time.monotonic()
        if any(error.verdict is Verdict.THROTTLED for _, error in failed):
            self.limiter.on_throttled(now)
        paused = next((error for _, error in failed if error.verdict is Verdict.ACCOUNT_PAUSED), None)
        if paused is not None:
            self.pause_sending(paused, now)
        for recipient, error in failed:
            self.settle(recipient, error, now, retry_transient=True)

    def settle(self, recipient: Recipient, error: Classified, now: float, retry_transient: bool) -> None:
        """One recipient's share of a failure: failed for good, retried later, or first in line."""
        rid = recipient.recipient_id
        self.counts[error.verdict.value] += 1
        if error.verdict is Verdict.PERMANENT:
            self.attempts.pop(rid, None)
            metrics.FAILED.labels(error.code).inc()
            self.apply(self.ledger.record(SendFailed(rid, error.code, error.message, now_ms())))
            return
        metrics.RETRIED.labels(error.verdict.value).inc()
        if error.verdict is Verdict.THROTTLED:
            metrics.THROTTLES.inc()
        if error.verdict is Verdict.THROTTLED or (retry_transient and error.verdict is Verdict.TRANSIENT):
            self.attempts[rid] += 1
            delay = jittered_backoff_s(self.attempts[rid], THROTTLE_RETRY_MIN_S, THROTTLE_RETRY_MAX_S)
            self.apply(self.ledger.retry_at(rid, now + delay))
        else:
            self.apply(self.ledger.requeue(rid))

    def fail(self, recipient: Recipient, error: Classified) -> None:
        """A mail that cannot be built: failed once, with the reason (it would fail the same way again)."""
        self.counts[error.verdict.value] += 1
        metrics.FAILED.labels(error.code).inc()
        self.apply(self.ledger.record(SendFailed(recipient.recipient_id, error.code, error.message, now_ms())))

    def pause_sending(self, error: Classified, now: float) -> None:
        """SES is unwell or the account cannot send: hold all sending for a while (the gate)."""
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

    # --- outcomes --------------------------------------------------------------------------

    async def flush_loop(self) -> None:
        """Send outcomes in batches; resend any the recorder has not acknowledged in time."""
        while True:
            timeout = ACK_TIMEOUT_S if self.ledger.unacked else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush.wait(), timeout)
            self._flush.clear()
            if len(self.ledger.pending) < OUTCOME_BATCH:
                await asyncio.sleep(OUTCOME_GATHER_S)  # let a few more join this batch
            await self.flush()
            await self.resend_stale()

    async def flush(self) -> None:
        while (batch := self.ledger.next_batch(time.monotonic())) is not None:
            await self.ctx.outboxes["recorder"].put(batch)

    async def resend_stale(self) -> None:
        """Recording is idempotent (only `sending` rows change), so a resend is safe."""
        for batch in self.ledger.stale(time.monotonic(), ACK_TIMEOUT_S):
            await self.ctx.outboxes["recorder"].put(batch)

    # --- shutdown --------------------------------------------------------------------------

    async def drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.ctx.settings.shutdown_timeout_s - DRAIN_MARGIN_S, 0.2)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=max(0.0, deadline - loop.time()))
        # Work already in the inbox behind the stop goes back to pending with the rest.
        while (message := self.ctx.inbox.get_nowait()) is not None:
            self.on_message(message)
        self.apply(self.ledger.release_unsent())
        await self.flush()
        while self.ledger.unacked and (left := deadline - loop.time()) > 0:
            message = await self.ctx.inbox.get_within(left)
            if message is not None:
                self.on_message(message)
                await self.flush()
        if self.ledger.unacked:
            self.ctx.log.warning("%d outcome batch(es) not acknowledged at exit", len(self.ledger.unacked))


def call_done(operation: str, started: float, ok: bool) -> None:
    """One SES call answered (a withdrawn one never left, and is not counted)."""
    metrics.SES_CALLS.labels(operation, "ok" if ok else "error").inc()
    metrics.SES_LATENCY.labels(operation).observe(time.perf_counter() - started)
