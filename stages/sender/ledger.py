"""The sender's bookkeeping, as one synchronous object: events in, effects out.

Every recipient the sender has taken from the scheduler is in exactly one state:

    delivered --> queued <-------------------- transient (front of the queue)
        |  early ---^ (claimed ahead of its due time: queued when due)
        |           |                                   |
        |           +--> in a call --+--> outcome pending flush --> unacked --> acked: gone
        |        retry-waiting <-----+ throttled       (a slot each, until the ack)
        +--> parked (a hold covering it is unanswered) --> queued, or dropped (claimed before the cut)
    hold: early, queued, retry-waiting and not-yet-admitted calls it covers leave (the recorder holds them)

A hold covers a topic (cancel, pause) or one address in one list or in all mail (an
unsubscribe); both take the same path, so an unsubscribe wins the same races as a cancel.

A slot is a recipient's: a call of n recipients (a SendBulkEmail carries up to 50) takes n.
It is taken when the call starts and given back when the recorder acknowledges the
recipient's outcome (or at once when it was withdrawn, throttled or failed transiently).
So after a kill -9 at most `in_flight_limit` recipients reached SES without a recorded
outcome: the documented bound on duplicates, in recipients whatever the calls. `check()`
states the invariants; the async shell (`sending.Sender`) only moves messages, waits and
calls SES.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.db.status import Status
from pipeline.messages import (
    AddressHeld,
    HoldAddress,
    HoldAddressRows,
    HoldTopic,
    HoldTopicRows,
    Outcome,
    Recipient,
    RecordOutcomes,
    Released,
    SendFailed,
    Sent,
    TopicHeld,
    Withheld,
)

OUTCOME_BATCH = 200


class InvariantBroken(AssertionError):
    """The ledger's books do not balance: a bug, never an input problem."""


@dataclass(frozen=True, slots=True)
class HoldScope:
    """What a hold covers: a topic, or an address (lower-cased) in one list or in all mail."""

    topic_id: str | None = None
    email: str | None = None
    list_id: str | None = None

    def covers(self, recipient: Recipient) -> bool:
        if self.topic_id is not None:
            return recipient.topic_id == self.topic_id
        return recipient.email.lower() == self.email and self.list_id in (None, recipient.list_id)


def without(heap: list[tuple[float, int, Recipient]], scope: HoldScope) -> list[tuple[float, int, Recipient]]:
    """The heap less what `scope` covers (the same list when it covers nothing)."""
    if not any(scope.covers(entry[2]) for entry in heap):
        return heap
    kept = [entry for entry in heap if not scope.covers(entry[2])]
    heapq.heapify(kept)
    return kept


def scope_of(message: HoldTopic | HoldAddress | TopicHeld | AddressHeld) -> HoldScope:
    if isinstance(message, HoldTopic | TopicHeld):
        return HoldScope(topic_id=message.topic_id)
    return HoldScope(email=message.email.lower(), list_id=message.list_id)


@dataclass(frozen=True, slots=True)
class Effects:
    """What the shell must do after an event."""

    # For the recorder, put without waiting (a hold's rows).
    hold_rows: HoldTopicRows | HoldAddressRows | None = None
    # How many more recipients to ask the scheduler for (0: not worth a message).
    demand: int = 0
    # Slots given back: the dispatcher may start calls again.
    freed: int = 0
    # Something may be due to dispatch.
    work: bool = False
    # Outcomes wait to be flushed.
    flush: bool = False


NOTHING = Effects()
WORK = Effects(work=True)
FLUSH = Effects(flush=True)


@dataclass(slots=True)
class Unacked:
    sent_at: float
    outcomes: tuple[Outcome, ...]
    slots: int


def holds_slot(outcome: Outcome) -> bool:
    """Sent and failed outcomes keep their call's slot until acknowledged; a release never had
    one, and a withheld recipient gave its slot back at once (nothing of it reached SES)."""
    return not isinstance(outcome, Released | Withheld)


@dataclass(slots=True)
class Ledger:
    in_flight_limit: int
    # Run the full O(n) check after every event (tests); the O(1) cross-check always runs.
    debug: bool = False
    queued: deque[Recipient] = field(default_factory=deque)
    retrying: list[tuple[float, int, Recipient]] = field(default_factory=list)
    # Claimed ahead of their due time: (when they are due on the shell's clock, seq, recipient).
    early: list[tuple[float, int, Recipient]] = field(default_factory=list)
    # Holds (cancel, pause, unsubscribe) until the recorder confirms: arrivals they cover wait
    # here, with their claim_seq and when they are due (0: already).
    parked: dict[HoldScope, list[tuple[int, Recipient, float]]] = field(default_factory=dict)
    # Work a hold covers that was claimed before this claim_seq: dropped on arrival. Claims
    # arrive in order, so a cut is forgotten once work claimed at or after it arrives.
    cut_seq: dict[HoldScope, int] = field(default_factory=dict)
    # Recipients in an SES call right now, by id; `admitted` of them have left for SES.
    calling: dict[int, Recipient] = field(default_factory=dict)
    admitted: set[int] = field(default_factory=set)
    # In a call but held before admission: the admission check stops them.
    withdrawn: set[int] = field(default_factory=set)
    # In a call already admitted when a hold covered them (so the hold kept their rows, which
    # may be at SES), with the status that hold gave: if SES does not send them after all
    # (throttled, transient, a call that never left), they are Withheld, never sent later.
    kept_held: dict[int, str] = field(default_factory=dict)
    pending: list[Outcome] = field(default_factory=list)
    unacked: dict[int, Unacked] = field(default_factory=dict)
    # Recipients taken and not yet gone (acknowledged, withdrawn or dropped): the sum of the states.
    taken: int = 0
    # Asked of the scheduler and not delivered yet.
    promised: int = 0
    slots_used: int = 0
    # Sends SES accepted, and the total of them the 24-hour quota allows (see quota_change).
    sent_total: int = 0
    quota_budget: float = float("inf")
    # Counters that keep check() O(1): parked recipients, slots held by pending outcomes, unacked ones.
    parked_count: int = 0
    pending_slots: int = 0
    unacked_count: int = 0
    unacked_slots: int = 0
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def capacity(self) -> int:
        """How many recipients we hold at most: the in-flight ones plus as many queued."""
        return self.in_flight_limit * 2

    # --- work arriving and holds ---------------------------------------------------------

    def deliver(
        self, recipients: Iterable[Recipient], claim_seq: int, release: bool = False, now: float = 0.0, now_ms: int = 0
    ) -> Effects:
        """Take delivered work; `release` (stopping) hands it straight back as Released.
        A recipient due after `now_ms` (the wall clock) waits until then, on the shell's clock
        (`now`): it is never started before it is due."""
        count = 0
        cuts = [scope for scope, cut in self.cut_seq.items() if claim_seq < cut]
        for recipient in recipients:
            count += 1
            if any(scope.covers(recipient) for scope in cuts):
                continue  # claimed before its hold: the recorder already moved it
            self.taken += 1
            holder = next((scope for scope in self.parked if scope.covers(recipient)), None)
            due = now + (recipient.due_at_ms - now_ms) / 1000 if recipient.due_at_ms > now_ms else 0.0
            if release:
                self.pending.append(Released(recipient.recipient_id))
            elif holder is not None:
                self.parked[holder].append((claim_seq, recipient, due))
                self.parked_count += 1
            else:
                self.enqueue(recipient, due)
        for scope in [scope for scope, cut in self.cut_seq.items() if cut <= claim_seq]:
            del self.cut_seq[scope]  # nothing claimed before it can arrive any more
        self.promised = max(0, self.promised - count)
        self.check()
        return FLUSH if release else WORK

    def hold(self, request: HoldTopic | HoldAddress) -> Effects:
        """Stop all work the request covers that has not reached SES; the rows tell the recorder what to hold."""
        scope = scope_of(request)
        self.taken -= self.take(scope)
        self.parked.setdefault(scope, [])
        # Calls that have not passed admission are withdrawn: they are held with the rest.
        withdrawing = {rid for rid, r in self.calling.items() if scope.covers(r)} - self.admitted
        self.withdrawn |= withdrawing
        # Rows that may already be at SES keep their status; their outcome decides it. Should
        # SES not send them after all, the hold's status is theirs (kept_held).
        keep = set(self.calling) - withdrawing
        status = request.hold if isinstance(request, HoldTopic) else Status.SUPPRESSED
        for rid in self.admitted:
            if scope.covers(self.calling[rid]):
                self.kept_held.setdefault(rid, status)
        keep.update(o.recipient_id for o in self.pending)
        keep.update(o.recipient_id for entry in self.unacked.values() for o in entry.outcomes)
        rows: HoldTopicRows | HoldAddressRows
        if isinstance(request, HoldTopic):
            rows = HoldTopicRows(
                request.corr_id, request.reply_to, request.topic_id, request.hold, tuple(sorted(keep)), request.reason
            )
        else:
            rows = HoldAddressRows(
                request.corr_id,
                request.reply_to,
                request.recipient_id,
                request.email,
                request.list_id,
                tuple(sorted(keep)),
            )
        self.check()
        return Effects(hold_rows=rows, demand=self.demand())

    def enqueue(self, recipient: Recipient, due: float) -> None:
        """In line now, or, claimed ahead of its due time (`due` on the shell's clock), when due."""
        if due:
            heapq.heappush(self.early, (due, next(self._seq), recipient))
        else:
            self.queued.append(recipient)

    def take(self, scope: HoldScope) -> int:
        """Remove what `scope` covers from the queue and the two heaps; return how many."""
        before = len(self.queued) + len(self.retrying) + len(self.early)
        if any(scope.covers(r) for r in self.queued):
            self.queued = deque(r for r in self.queued if not scope.covers(r))
        self.retrying = without(self.retrying, scope)
        self.early = without(self.early, scope)
        return before - len(self.queued) - len(self.retrying) - len(self.early)

    def hold_answered(self, answer: TopicHeld | AddressHeld) -> Effects:
        """The recorder held the rows at `claim_seq`: parked work claimed before that is dropped."""
        scope = scope_of(answer)
        self.cut_seq[scope] = max(self.cut_seq.get(scope, 0), answer.claim_seq + 1)
        parked = self.parked.pop(scope, [])
        fresh = [(seq, r, due) for seq, r, due in parked if seq > answer.claim_seq]
        self.parked_count -= len(parked) - len(fresh)
        self.taken -= len(parked) - len(fresh)
        for seq, recipient, due in fresh:
            # Another hold still unanswered may cover it too (a topic and an address): it waits for that one.
            holder = next((other for other in self.parked if other.covers(recipient)), None)
            if holder is None:
                self.enqueue(recipient, due)
                self.parked_count -= 1
            else:
                self.parked[holder].append((seq, recipient, due))
        self.check()
        return Effects(demand=self.demand(), work=True)

    # --- calls ---------------------------------------------------------------------------

    def can_start(self) -> bool:
        return self.slots_used < self.in_flight_limit

    def work_delay_s(self, now: float) -> float | None:
        """0 when a recipient is due now, else how long until a retry or early work is due (None: nothing)."""
        if self.queued:
            return 0.0
        waits = [heap[0][0] for heap in (self.retrying, self.early) if heap]
        return max(0.0, min(waits) - now) if waits else None

    def free_slots(self) -> int:
        return self.in_flight_limit - self.slots_used

    def start_call(self, now: float) -> Recipient | None:
        """Take a slot and the next recipient (a due retry first), or None when nothing is due."""
        batch = self.start_batch(now, 1)
        return batch[0] if batch else None

    def start_batch(self, now: float, most: int) -> list[Recipient]:
        """Take up to `most` recipients for one call, due retries first, a slot each.

        A slot per recipient, not per call: the bound on duplicates after a kill -9 is in
        recipients either way.
        """
        if not 1 <= most <= self.free_slots():
            raise InvariantBroken(f"a call of {most} was started with {self.free_slots()} free slots")
        while self.early and self.early[0][0] <= now:  # due now: in line behind what was due before
            self.queued.append(heapq.heappop(self.early)[2])
        batch: list[Recipient] = []
        while len(batch) < most and self.retrying and self.retrying[0][0] <= now:
            batch.append(heapq.heappop(self.retrying)[2])
        while len(batch) < most and self.queued:
            batch.append(self.queued.popleft())
        for recipient in batch:
            self.calling[recipient.recipient_id] = recipient
        self.slots_used += len(batch)
        self.check()
        return batch

    def admit(self, recipient_id: int) -> bool:
        """The wire-level check: False when the recipient was held while it waited."""
        return not self.admit_call((recipient_id,))

    def admit_call(self, recipient_ids: tuple[int, ...]) -> list[int]:
        """The wire-level check of one call: the recipients held while it waited (then none
        of the call leaves and nobody is admitted), or [] when all of it may leave. A
        recipient held after an earlier call of its own was admitted is held here too."""
        withdrawn = [rid for rid in recipient_ids if rid in self.withdrawn or rid in self.kept_held]
        if not withdrawn:
            self.admitted.update(rid for rid in recipient_ids if rid in self.calling)
        return withdrawn

    def withdraw(self, recipient_id: int) -> Effects:
        """Never sent, and held: by the recorder with its topic (held before admission), or,
        when its hold kept the row, as a Withheld outcome the recorder applies."""
        status = self.kept_held.pop(recipient_id, None)
        self.end_call(recipient_id)
        self.slots_used -= 1
        if status is not None:
            self.pending.append(Withheld(recipient_id, status))  # holds no slot: nothing reached SES
            self.check()
            return Effects(freed=1, flush=True)
        self.taken -= 1
        self.check()
        return Effects(demand=self.demand(), freed=1)

    def record(self, outcome: Sent | SendFailed) -> Effects:
        """SES answered for good (sent or failed): the outcome waits for a flush, the slot for its ack."""
        self.end_call(outcome.recipient_id)
        self.kept_held.pop(outcome.recipient_id, None)  # the outcome decides, as the hold said
        if isinstance(outcome, Sent):
            self.sent_total += 1
        self.pending.append(outcome)
        self.pending_slots += 1
        self.check()
        return FLUSH

    def retry_at(self, recipient_id: int, due_at: float) -> Effects:
        """Throttled: not sent, so the slot is free now; the recipient waits until `due_at`."""
        if recipient_id in self.withdrawn or recipient_id in self.kept_held:
            return self.withdraw(recipient_id)
        recipient = self.end_call(recipient_id)
        heapq.heappush(self.retrying, (due_at, next(self._seq), recipient))
        self.slots_used -= 1
        self.check()
        return Effects(freed=1, work=True)

    def requeue(self, recipient_id: int) -> Effects:
        """A transient failure: not sent, so the slot is free now; the recipient goes first in line."""
        if recipient_id in self.withdrawn or recipient_id in self.kept_held:
            return self.withdraw(recipient_id)
        self.queued.appendleft(self.end_call(recipient_id))
        self.slots_used -= 1
        self.check()
        return Effects(freed=1, work=True)

    def end_call(self, recipient_id: int) -> Recipient:
        self.admitted.discard(recipient_id)
        self.withdrawn.discard(recipient_id)
        return self.calling.pop(recipient_id)

    # --- the 24-hour quota ---------------------------------------------------------------

    def quota_change(self, remaining: float) -> Effects:
        """GetAccount says `remaining` sends are left, counted from the sends recorded so far.

        Calls in flight are not added back: SES may not have counted them yet, and
        assuming it had let a refresh mid-send go past the quota. At the edge this holds
        up to the in-flight count back until the next refresh shows the true figure.
        """
        self.quota_budget = self.sent_total + remaining
        return WORK

    def quota_allows(self) -> bool:
        """Another call fits in the quota, counting every call in flight as sent."""
        return self.quota_room() > 0

    def call_room(self, most: int) -> int:
        """How many recipients the next call may take: `most`, within the free slots and the
        whole sends left in the quota (0: none left, counting the calls in flight)."""
        room = self.quota_room()
        quota = most if room == float("inf") else math.floor(room)
        return max(0, min(most, self.free_slots(), quota))

    def quota_room(self) -> float:
        """How many more recipients the 24-hour quota takes, counting every one in a call as sent."""
        return self.quota_budget - self.sent_total - len(self.calling)

    # --- outcomes ------------------------------------------------------------------------

    def next_batch(self, now: float, reply_to: str = "sender") -> RecordOutcomes | None:
        """Up to OUTCOME_BATCH pending outcomes, now awaiting the recorder's ack under a new corr_id."""
        if not self.pending:
            return None
        batch = tuple(self.pending[:OUTCOME_BATCH])
        del self.pending[:OUTCOME_BATCH]
        corr_id = next(self._seq)
        slots = sum(1 for o in batch if holds_slot(o))
        self.unacked[corr_id] = Unacked(now, batch, slots)
        self.pending_slots -= slots
        self.unacked_slots += slots
        self.unacked_count += len(batch)
        self.check()
        return RecordOutcomes(corr_id, reply_to, batch)

    def stale(self, now: float, timeout_s: float, reply_to: str = "sender") -> list[RecordOutcomes]:
        """Batches not acknowledged within `timeout_s`, to send again (recording is idempotent)."""
        again = []
        for corr_id, entry in self.unacked.items():
            if now - entry.sent_at >= timeout_s:
                entry.sent_at = now
                again.append(RecordOutcomes(corr_id, reply_to, entry.outcomes))
        return again

    def ack(self, corr_id: int) -> Effects:
        """The recorder has the batch: its recipients are gone and their slots free."""
        entry = self.unacked.pop(corr_id, None)
        if entry is None:
            return NOTHING  # a duplicate, or a batch from before a restart
        self.slots_used -= entry.slots
        self.unacked_slots -= entry.slots
        self.unacked_count -= len(entry.outcomes)
        self.taken -= len(entry.outcomes)
        self.check()
        return Effects(demand=self.demand(), freed=entry.slots)

    def release_unsent(self) -> Effects:
        """At drain: everything not in a call goes back to pending (parked work too)."""
        unsent = [*self.queued, *(entry[2] for entry in (*self.retrying, *self.early))]
        unsent += [r for parked in self.parked.values() for _, r, _ in parked]
        self.queued.clear()
        self.retrying.clear()
        self.early.clear()
        self.parked.clear()
        self.parked_count = 0
        self.pending.extend(Released(r.recipient_id) for r in unsent)
        self.check()
        return FLUSH

    # --- asking for work -----------------------------------------------------------------

    def demand(self) -> int:
        """How much more we can hold, when that is worth a message to the scheduler (else 0)."""
        room = self.capacity - self.taken - self.promised
        return room if room >= max(1, self.capacity // 4) else 0

    def promise(self, count: int) -> None:
        """The scheduler was asked for `count` more."""
        self.promised += count

    # --- invariants ----------------------------------------------------------------------

    def check(self) -> None:
        """The books balance: O(1) always, and the full recount when `debug` is set."""
        states = (
            len(self.queued)
            + len(self.retrying)
            + len(self.early)
            + self.parked_count
            + len(self.calling)
            + len(self.pending)
            + self.unacked_count
        )
        if self.taken != states:
            raise InvariantBroken(f"taken {self.taken} != recipients in some state {states}")
        if self.slots_used != len(self.calling) + self.pending_slots + self.unacked_slots:
            raise InvariantBroken(f"slots in use {self.slots_used} != calls in flight + outcomes not acknowledged")
        if not 0 <= self.slots_used <= self.in_flight_limit or self.promised < 0:
            raise InvariantBroken(f"slots in use {self.slots_used} out of 0..{self.in_flight_limit}")
        if self.debug:
            self.check_all()

    def check_all(self) -> None:
        """O(n): recount every derived number and see each recipient in exactly one state."""
        ids = [r.recipient_id for r in self.queued]
        ids += [entry[2].recipient_id for entry in (*self.retrying, *self.early)]
        ids += [r.recipient_id for parked in self.parked.values() for _, r, _ in parked]
        ids += list(self.calling)
        ids += [o.recipient_id for o in self.pending]
        ids += [o.recipient_id for entry in self.unacked.values() for o in entry.outcomes]
        if len(ids) != len(set(ids)):
            raise InvariantBroken("a recipient is in two states at once")
        if self.parked_count != sum(len(parked) for parked in self.parked.values()):
            raise InvariantBroken("parked count is off")
        if self.pending_slots != sum(1 for o in self.pending if holds_slot(o)):
            raise InvariantBroken("slots of pending outcomes are off")
        if self.unacked_slots != sum(e.slots for e in self.unacked.values()):
            raise InvariantBroken("slots of unacknowledged outcomes are off")
        if self.unacked_count != sum(len(e.outcomes) for e in self.unacked.values()):
            raise InvariantBroken("unacknowledged count is off")
        if not (self.admitted | self.withdrawn) <= set(self.calling) or self.admitted & self.withdrawn:
            raise InvariantBroken("admitted and withdrawn must be disjoint calls in flight")
        if not set(self.kept_held) <= set(self.calling):
            raise InvariantBroken("a recipient kept by a hold is not in a call")
