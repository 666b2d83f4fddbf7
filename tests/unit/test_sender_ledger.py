"""The sender's ledger, driven directly: random histories against a model of the recorder, and the tricky cases.

The model recorder keeps one status per row (sending, sent, failed, held, pending) and takes
the sender's messages in order (holds and outcome batches share its inbox); its answers
(TopicHeld, OutcomesRecorded) reach the sender in order, while Deliver messages come another
way (through the scheduler), so a TopicHeld can overtake work claimed before the hold.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pipeline.db.status import Status
from pipeline.messages import (
    AddressHeld,
    HoldAddress,
    HoldAddressRows,
    HoldTopic,
    HoldTopicRows,
    OutcomesRecorded,
    Recipient,
    RecordOutcomes,
    Released,
    SendFailed,
    Sent,
    TopicHeld,
    Withheld,
)
from stages.sender.ledger import FLUSH, Effects, HoldScope, InvariantBroken, Ledger, scope_of

TOPICS = ("a", "b", "c")
LIMIT = 3


def recipient(rid: int, topic: str = "a") -> Recipient:
    return Recipient(rid, f"r{rid}@example.com", topic, 1)


def held(topic: str, claim_seq: int, corr_id: int = 1) -> TopicHeld:
    return TopicHeld(corr_id, topic, "cancelled", 0, True, claim_seq)


def ids_in(ledger: Ledger) -> set[int]:
    ids = {r.recipient_id for r in ledger.queued} | {e[2].recipient_id for e in (*ledger.retrying, *ledger.early)}
    ids |= {r.recipient_id for parked in ledger.parked.values() for _, r, _ in parked}
    ids |= set(ledger.calling) | {o.recipient_id for o in ledger.pending}
    return ids | {o.recipient_id for e in ledger.unacked.values() for o in e.outcomes}


# In the random histories addresses repeat across topics, and two topics share a list, so
# an unsubscribe (an address in a list, or in all mail) and a cancel can cover the same work.
LISTS = {"a": "news", "b": "news", "c": None}
ADDRESSES = 3


def member(rid: int, topic: str, due_at_ms: int = 0) -> Recipient:
    return Recipient(rid, f"u{rid % ADDRESSES}@example.com", topic, 1, LISTS[topic], due_at_ms=due_at_ms)


@dataclass
class Hold:
    scope: HoldScope
    asked_at: int
    keep: frozenset[int]
    point: int | None = None  # the recorder's claim_seq when it held the rows
    answered: bool = False


@dataclass
class Recorder:
    """What SQLite would hold, applying the sender's messages in order."""

    status: dict[int, str] = field(default_factory=dict)
    rows: dict[int, Recipient] = field(default_factory=dict)
    seq: int = 0
    inbox: deque[tuple[HoldTopicRows | HoldAddressRows, Hold] | RecordOutcomes] = field(default_factory=deque)

    def claim(self, recipients: list[Recipient]) -> int:
        self.seq += 1
        for r in recipients:
            self.status[r.recipient_id], self.rows[r.recipient_id] = "sending", r
        return self.seq

    def hold(self, rows: HoldTopicRows | HoldAddressRows, hold: Hold) -> set[int]:
        hold.point = self.seq
        moved = {
            rid
            for rid, s in self.status.items()
            if hold.scope.covers(self.rows[rid]) and s in ("sending", "pending") and rid not in rows.keep
        }
        for rid in moved:
            self.status[rid] = "held"
        return moved

    def record(self, request: RecordOutcomes) -> None:
        for outcome in request.outcomes:
            if self.status[outcome.recipient_id] != "sending":
                continue  # only `sending` rows change: a replay or a held row is harmless
            match outcome:
                case Sent():
                    self.status[outcome.recipient_id] = "sent"
                case SendFailed():
                    self.status[outcome.recipient_id] = "failed"
                case Released():
                    self.status[outcome.recipient_id] = "pending"
                case Withheld():
                    self.status[outcome.recipient_id] = "held"


class LedgerHistories(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(LIMIT, debug=True)
        self.recorder = Recorder()
        self.now = 0.0
        self.step = 0
        self.next_rid = 1
        self.claim_seq: dict[int, int] = {}
        self.transit: deque[tuple[tuple[Recipient, ...], int]] = deque()  # Deliver, via the scheduler
        self.answers: deque[TopicHeld | AddressHeld | OutcomesRecorded] = deque()  # recorder -> sender, in order
        self.holds: list[Hold] = []
        self.hold_of: dict[int, Hold] = {}  # TopicHeld / AddressHeld corr_id -> its hold
        self.admitted_at: dict[int, list[int]] = {}
        self.stopping = False

    def tick(self) -> None:
        self.step += 1

    # --- the scheduler and the recorder ---------------------------------------------------

    @rule(topic=st.sampled_from(TOPICS), size=st.integers(1, 4), ahead_ms=st.sampled_from((0, 0, 500, 2_000)))
    def claim(self, topic: str, size: int, ahead_ms: int) -> None:
        """Work due now, or claimed ahead of its due time (the scheduler's CLAIM_AHEAD_MS)."""
        due_ms = int(self.now * 1000) + ahead_ms if ahead_ms else 0
        claimed = [member(rid, topic, due_ms) for rid in range(self.next_rid, self.next_rid + size)]
        self.next_rid += size
        seq = self.recorder.claim(claimed)
        self.claim_seq.update(dict.fromkeys((r.recipient_id for r in claimed), seq))
        self.transit.append((tuple(claimed), seq))

    @precondition(lambda self: self.transit)
    @rule()
    def deliver(self) -> None:
        self.tick()
        recipients, seq = self.transit.popleft()
        self.ledger.deliver(recipients, seq, release=self.stopping, now=self.now, now_ms=int(self.now * 1000))

    @precondition(lambda self: self.recorder.inbox)
    @rule()
    def recorder_takes_one(self) -> None:
        item = self.recorder.inbox.popleft()
        if isinstance(item, RecordOutcomes):
            self.recorder.record(item)
            self.answers.append(OutcomesRecorded(item.corr_id))
            return
        rows, hold = item
        for rid in self.recorder.hold(rows, hold):
            # A row the recorder holds never reached SES after its hold was asked.
            assert all(at < hold.asked_at for at in self.admitted_at.get(rid, [])), rid
        if isinstance(rows, HoldTopicRows):
            self.answers.append(held(rows.topic_id, self.recorder.seq, rows.corr_id))
        else:
            self.answers.append(AddressHeld(rows.corr_id, rows.email, rows.list_id, 0, True, self.recorder.seq))

    @precondition(lambda self: self.answers)
    @rule()
    def sender_reads_answer(self) -> None:
        self.tick()
        answer = self.answers.popleft()
        if isinstance(answer, TopicHeld | AddressHeld):
            self.hold_of[answer.corr_id].answered = True
            self.ledger.hold_answered(answer)
        else:
            self.ledger.ack(answer.corr_id)

    @rule(corr_id=st.integers(-3, 60))
    def stray_ack(self, corr_id: int) -> None:
        """A duplicate ack, or one for a batch the ledger never sent."""
        self.tick()
        self.ledger.ack(corr_id)

    # --- holds ----------------------------------------------------------------------------

    @rule(topic=st.sampled_from(TOPICS))
    def hold(self, topic: str) -> None:
        self.ask(HoldTopic(len(self.holds) + 1, "ingest", topic, Status.CANCELLED))

    @precondition(lambda self: self.ledger.admitted)
    @rule(data=st.data())
    def hold_a_call_at_ses(self, data: st.DataObject) -> None:
        """The race that keeps rows: a cancel or pause of a topic whose call may be at SES."""
        rid = data.draw(st.sampled_from(sorted(self.ledger.admitted)))
        how = data.draw(st.sampled_from((Status.CANCELLED, Status.PAUSED)))
        self.ask(HoldTopic(len(self.holds) + 1, "ingest", self.ledger.calling[rid].topic_id, how))

    @rule(address=st.integers(0, ADDRESSES - 1), list_id=st.sampled_from(("news", None)))
    def unsubscribe(self, address: int, list_id: str | None) -> None:
        self.ask(HoldAddress(len(self.holds) + 1, "ingest", 0, f"U{address}@example.com", list_id))

    def ask(self, request: HoldTopic | HoldAddress) -> None:
        # One hold of a scope at a time (a second racing one of the same scope is not covered).
        scope = scope_of(request)
        if any(h.scope == scope and not h.answered for h in self.holds):
            return
        self.tick()
        effects = self.ledger.hold(request)
        assert effects.hold_rows is not None
        hold = Hold(scope, self.step, frozenset(effects.hold_rows.keep))
        self.holds.append(hold)
        self.hold_of[request.corr_id] = hold
        self.recorder.inbox.append((effects.hold_rows, hold))
        for r in self.ledger.queued:
            assert not scope.covers(r) or r.recipient_id in hold.keep

    # --- calls ----------------------------------------------------------------------------

    @precondition(lambda self: self.ledger.can_start() and not self.stopping)
    @rule(data=st.data())
    def start_call(self, data: st.DataObject) -> None:
        """A call of one recipient (SendEmail) or several (SendBulkEmail)."""
        self.tick()
        most = data.draw(st.integers(1, min(5, self.ledger.free_slots())))
        for started in self.ledger.start_batch(self.now, most):
            rid = started.recipient_id
            # Claimed ahead, it is never started before it is due (to the ms).
            assert self.now * 1000 >= started.due_at_ms - 1, (rid, self.now, started.due_at_ms)
            for hold in self.holds:
                if not hold.scope.covers(started):
                    continue
                # Dispatched after a hold: only work claimed after the recorder's cut. A kept row
                # (its call may have been at SES) is never sent again: not sent, it is Withheld.
                assert hold.answered and hold.point is not None and self.claim_seq[rid] > hold.point, rid

    def call(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.ledger.calling)))

    @precondition(lambda self: set(self.ledger.calling) - self.ledger.admitted)
    @rule(data=st.data())
    def admit(self, data: st.DataObject) -> None:
        """One call reaches the wire: all of it leaves, or (one of it held) none of it does."""
        self.tick()
        waiting = sorted(set(self.ledger.calling) - self.ledger.admitted)
        call = data.draw(st.lists(st.sampled_from(waiting), min_size=1, max_size=5, unique=True))
        withdrawn = self.ledger.admit_call(tuple(call))
        if not withdrawn:
            for rid in call:
                assert self.recorder.status[rid] != "held", rid
                self.admitted_at.setdefault(rid, []).append(self.step)
            return
        for rid in call:
            # The shell: the held ones are withdrawn, the rest of the call goes back to the queue.
            if rid in withdrawn:
                self.ledger.withdraw(rid)
            else:
                self.ledger.requeue(rid)

    @precondition(lambda self: self.ledger.admitted)
    @rule(data=st.data())
    def sent(self, data: st.DataObject) -> None:
        self.tick()
        rid = data.draw(st.sampled_from(sorted(self.ledger.admitted)))
        self.ledger.record(Sent(rid, f"m{rid}", 0))

    @precondition(lambda self: self.ledger.calling)
    @rule(data=st.data(), how=st.sampled_from(("failed", "throttled", "transient")))
    def not_sent(self, data: st.DataObject, how: str) -> None:
        """Before or after admission: a permanent refusal, a throttle, or a transient error."""
        self.tick()
        rid = self.call(data)
        if how == "failed":
            self.ledger.record(SendFailed(rid, "MessageRejected", "no", 0))
        elif how == "throttled":
            self.ledger.retry_at(rid, self.now + data.draw(st.floats(0, 2)))
        else:
            self.ledger.requeue(rid)

    @rule(seconds=st.floats(0, 3))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    # --- outcomes ---------------------------------------------------------------------------

    @precondition(lambda self: self.ledger.pending)
    @rule()
    def flush(self) -> None:
        batch = self.ledger.next_batch(self.now)
        assert batch is not None
        self.recorder.inbox.append(batch)

    @rule()
    def resend_stale(self) -> None:
        self.recorder.inbox.extend(self.ledger.stale(self.now, 1.0))

    # Not in the first 20 steps: drawn as often as any rule, an early drain released nearly all
    # work before it reached a call (in 300 histories retry_at and requeue never ran).
    @precondition(lambda self: not self.stopping and self.step >= 20)
    @rule()
    def stop(self) -> None:
        """Drain begins: work arriving from now on is released at once, and what waits goes back."""
        self.stopping = True
        self.ledger.release_unsent()

    @invariant()
    def books_balance(self) -> None:
        self.ledger.check_all()
        assert self.ledger.taken == len(ids_in(self.ledger))
        assert self.ledger.slots_used <= LIMIT

    def teardown(self) -> None:
        """Finish everything; then no row is left `sending` and the ledger holds nothing."""
        self.stopping = True
        for _ in range(100):
            while self.transit:
                self.deliver()
            for rid in sorted(self.ledger.calling):
                if self.ledger.admit(rid):
                    self.ledger.record(Sent(rid, f"m{rid}", 0))
                else:
                    self.ledger.withdraw(rid)
            self.ledger.release_unsent()
            while (batch := self.ledger.next_batch(self.now)) is not None:
                self.recorder.inbox.append(batch)
            while self.recorder.inbox:
                self.recorder_takes_one()
            while self.answers:
                self.sender_reads_answer()
            if not (self.transit or self.ledger.taken or self.recorder.inbox):
                break
        assert self.ledger.taken == 0 and self.ledger.slots_used == 0
        left = {rid: s for rid, s in self.recorder.status.items() if s == "sending"}
        assert not left, f"lost: {left}"


LedgerHistories.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_random_histories = LedgerHistories.TestCase


# --- the tricky cases, one by one --------------------------------------------------------------


def test_a_slot_is_held_from_the_call_until_the_ack() -> None:
    ledger = Ledger(1, debug=True)
    ledger.deliver([recipient(1), recipient(2)], 1)
    assert ledger.start_call(0.0) == recipient(1)
    assert not ledger.can_start()
    assert ledger.record(Sent(1, "m", 0)) is FLUSH
    batch = ledger.next_batch(0.0)
    assert batch is not None and not ledger.can_start()  # flushed is not acknowledged
    assert batch.reply_to == "sender"  # the recorder's ack comes back to this stage
    assert ledger.ack(batch.corr_id) == Effects(demand=1, freed=1)  # room for one more: ask for it
    assert ledger.can_start() and ledger.taken == 1


def test_duplicate_and_unknown_acks_change_nothing() -> None:
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1)], 1)
    ledger.start_call(0.0)
    ledger.record(Sent(1, "m", 0))
    batch = ledger.next_batch(0.0)
    assert batch is not None
    ledger.ack(batch.corr_id)
    assert ledger.ack(batch.corr_id).freed == 0
    assert ledger.ack(999).freed == 0
    assert ledger.taken == 0 and ledger.slots_used == 0


def test_a_hold_withdraws_calls_not_yet_admitted_and_keeps_the_others() -> None:
    ledger = Ledger(4, debug=True)
    ledger.deliver([recipient(1), recipient(2), recipient(3), recipient(4, "b")], 1)
    for _ in range(2):
        ledger.start_call(0.0)
    assert ledger.admit(1)
    effects = ledger.hold(HoldTopic(7, "ingest", "a", "cancelled"))
    # Admitted, 1 may be at SES: its row is kept; the recorder answers ingest, who asked
    assert effects.hold_rows == HoldTopicRows(7, "ingest", "a", "cancelled", keep=(1,))
    assert effects.demand == 5, "3 left the ledger: room for 5 of 8"
    assert not ledger.admit(2)  # withdrawn: it never leaves
    assert ledger.withdraw(2) == Effects(demand=6, freed=1)
    assert [r.recipient_id for r in ledger.queued] == [4]  # 3 was taken by the hold
    assert ledger.taken == 2


def test_work_claimed_before_the_cut_is_dropped_whether_it_arrives_before_or_after_the_answer() -> None:
    ledger = Ledger(4, debug=True)
    ledger.hold(HoldTopic(1, "ingest", "a", "paused"))
    ledger.deliver([recipient(1)], 5)  # claimed before the hold point (7): parked, then dropped
    ledger.deliver([recipient(2)], 8)  # claimed after it: parked, then released to the queue
    assert not ledger.queued and ledger.parked_count == 2
    assert ledger.hold_answered(held("a", 7)) == Effects(demand=7, work=True)  # 2 is due: wake the dispatcher
    assert [r.recipient_id for r in ledger.queued] == [2]
    ledger.deliver([recipient(3)], 6)  # arrives after the answer, claimed before: dropped on arrival
    ledger.deliver([recipient(4)], 9)
    assert [r.recipient_id for r in ledger.queued] == [2, 4] and ledger.taken == 2


def test_a_throttle_frees_the_slot_and_the_retry_waits_its_turn() -> None:
    ledger = Ledger(1, debug=True)
    ledger.deliver([recipient(1)], 1)
    ledger.start_call(0.0)
    assert ledger.retry_at(1, 5.0) == Effects(freed=1, work=True)
    assert ledger.work_delay_s(1.0) == 4.0
    assert ledger.work_delay_s(4.5) == 0.5
    assert ledger.work_delay_s(6.0) == 0.0, "overdue: now"
    assert ledger.start_call(1.0) is None
    assert ledger.start_call(5.0) == recipient(1)


def test_a_transient_failure_goes_first_in_line() -> None:
    ledger = Ledger(1, debug=True)
    ledger.deliver([recipient(1), recipient(2)], 1)
    ledger.start_call(0.0)
    assert ledger.requeue(1) == Effects(freed=1, work=True)
    assert [r.recipient_id for r in ledger.queued] == [1, 2]
    assert ledger.work_delay_s(0.0) == 0.0


def test_a_withdrawn_call_that_fails_transiently_is_not_sent_later() -> None:
    # Given a call held before admission (a credentials error comes before the wire)
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1)], 1)
    ledger.start_call(0.0)
    ledger.hold(HoldTopic(1, "ingest", "a", "cancelled"))
    # When it fails transiently, then it leaves with its slot instead of queueing again
    assert ledger.requeue(1).freed == 1
    assert not ledger.queued and ledger.taken == 0 and ledger.slots_used == 0


def test_a_withdrawn_call_that_is_throttled_is_not_retried() -> None:
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1)], 1)
    ledger.start_call(0.0)
    ledger.hold(HoldTopic(1, "ingest", "a", "cancelled"))
    assert ledger.retry_at(1, 5.0).freed == 1
    assert ledger.work_delay_s(10.0) is None and ledger.taken == 0 and ledger.slots_used == 0


@pytest.mark.parametrize("not_sent", ["throttled", "transient", "admitted again"])
def test_a_kept_call_that_ses_did_not_send_is_withheld_not_sent_later(not_sent: str) -> None:
    # Given a call already admitted (perhaps at SES) when its topic is paused: the hold keeps its row
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1)], 1)
    ledger.start_call(0.0)
    assert ledger.admit(1)
    rows = ledger.hold(HoldTopic(1, "ingest", "a", "paused")).hold_rows
    assert rows is not None and rows.keep == (1,)
    # When SES says it did not send it (or, in a bulk call that failed, it is about to go again alone)
    if not_sent == "throttled":
        effects = ledger.retry_at(1, 5.0)
    elif not_sent == "transient":
        effects = ledger.requeue(1)
    else:
        assert ledger.admit_call((1,)) == [1], "a second call of a kept recipient is stopped at admission"
        effects = ledger.withdraw(1)
    # Then it is never sent later: it goes to the recorder as paused, and its slot is free at once
    assert effects.freed == 1 and effects.flush
    assert not ledger.queued and not ledger.retrying and ledger.work_delay_s(10.0) is None
    batch = ledger.next_batch(0.0)
    assert batch is not None and batch.outcomes == (Withheld(1, "paused"),)
    assert ledger.slots_used == 0
    assert ledger.ack(batch.corr_id).freed == 0 and ledger.taken == 0


def test_a_kept_call_that_ses_sent_or_refused_keeps_that_outcome() -> None:
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1), recipient(2)], 1)
    ledger.start_batch(0.0, 2)
    assert ledger.admit_call((1, 2)) == []
    ledger.hold(HoldTopic(1, "ingest", "a", "cancelled"))
    ledger.record(Sent(1, "m1", 0))
    ledger.record(SendFailed(2, "MessageRejected", "no", 0))
    assert not ledger.kept_held
    batch = ledger.next_batch(0.0)
    assert batch is not None and [type(o) for o in batch.outcomes] == [Sent, SendFailed]


def test_released_outcomes_hold_no_slot_and_drain_releases_parked_work() -> None:
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1), recipient(2, "b")], 1)
    ledger.hold(HoldTopic(1, "ingest", "b", "paused"))
    ledger.deliver([recipient(3, "b")], 9)
    ledger.release_unsent()
    assert {o.recipient_id for o in ledger.pending} == {1, 3}
    batch = ledger.next_batch(0.0)
    assert batch is not None and ledger.slots_used == 0
    ledger.ack(batch.corr_id)
    assert ledger.taken == 0


def test_demand_asks_for_room_in_worthwhile_chunks() -> None:
    ledger = Ledger(4)
    assert ledger.demand() == 8
    ledger.promise(8)
    assert ledger.demand() == 0
    ledger.deliver([recipient(i) for i in range(1, 8)], 1)
    assert ledger.promised == 1 and ledger.demand() == 0  # room 0 once the promise is counted


def test_the_books_are_checked() -> None:
    ledger = Ledger(1)
    ledger.taken = 1
    with pytest.raises(InvariantBroken):
        ledger.check()
    ledger.taken, ledger.promised = 0, -1
    with pytest.raises(InvariantBroken):
        ledger.check()


def test_the_full_recount_sees_a_recipient_in_two_states() -> None:
    # Given a recipient whose outcome awaits its ack, when it is also queued (a double send waiting)
    ledger = Ledger(2)
    ledger.deliver([recipient(1)], 1)
    ledger.start_call(0.0)
    ledger.record(Sent(1, "m", 0))
    ledger.next_batch(0.0)
    ledger.queued.append(recipient(1))
    with pytest.raises(InvariantBroken):
        ledger.check_all()


def test_the_full_recount_sees_an_admission_outside_the_calls() -> None:
    ledger = Ledger(2)
    ledger.admitted.add(99)
    with pytest.raises(InvariantBroken):
        ledger.check_all()


def test_the_quota_counts_calls_in_flight_as_sent_and_a_refresh_reopens_it() -> None:
    # Given two sends left in the 24-hour quota
    ledger = Ledger(4, debug=True)
    ledger.deliver([recipient(i) for i in range(1, 5)], 1)
    ledger.quota_change(2)
    ledger.start_call(0.0)
    ledger.start_call(0.0)
    # Then two calls in flight use it up, and a failure does not count against it
    assert not ledger.quota_allows()
    ledger.record(SendFailed(2, "MessageRejected", "no", 0))
    assert ledger.quota_allows()
    ledger.start_call(0.0)
    ledger.record(Sent(1, "m", 0))
    ledger.record(Sent(3, "m", 0))
    assert not ledger.quota_allows()
    # When GetAccount says one more is left, counted from what is recorded so far
    assert ledger.quota_change(1).work
    assert ledger.quota_allows()
    ledger.start_call(0.0)
    assert not ledger.quota_allows()


def test_delivered_work_wakes_the_dispatcher_and_released_work_the_flusher() -> None:
    ledger = Ledger(2, debug=True)
    effects = ledger.deliver([recipient(1)], 1)
    assert effects.work and not effects.flush
    effects = ledger.deliver([recipient(2)], 2, release=True)
    assert effects.flush and not effects.work


def test_a_dropped_recipient_does_not_drop_the_rest_of_its_delivery() -> None:
    ledger = Ledger(4, debug=True)
    ledger.hold(HoldTopic(1, "ingest", "a", "cancelled"))
    ledger.hold_answered(held("a", 7))
    ledger.deliver([recipient(1, "a"), recipient(2, "b"), recipient(3, "c")], 5)
    assert [r.recipient_id for r in ledger.queued] == [2, 3]


def test_work_of_a_topic_never_held_is_never_dropped() -> None:
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1)], 0)  # Deliver's default claim_seq
    assert [r.recipient_id for r in ledger.queued] == [1]


def test_a_second_hold_keeps_the_first_holds_calls_withdrawn() -> None:
    ledger = Ledger(4, debug=True)
    ledger.deliver([recipient(1, "a"), recipient(2, "b")], 1)
    ledger.start_call(0.0)
    ledger.start_call(0.0)
    ledger.hold(HoldTopic(1, "ingest", "a", "cancelled"))
    ledger.hold(HoldTopic(2, "ingest", "b", "paused"))
    assert not ledger.admit(1) and not ledger.admit(2)


def test_a_hold_takes_its_topics_retries_and_leaves_the_others() -> None:
    ledger = Ledger(4, debug=True)
    ledger.deliver([recipient(1, "a"), recipient(2, "b")], 1)
    ledger.start_call(0.0)
    ledger.start_call(0.0)
    ledger.retry_at(1, 5.0)
    ledger.retry_at(2, 6.0)
    ledger.hold(HoldTopic(1, "ingest", "a", "cancelled"))
    assert ledger.work_delay_s(0.0) == 6.0 and ledger.taken == 1
    ledger.hold(HoldTopic(2, "ingest", "b", "cancelled"))
    assert ledger.work_delay_s(0.0) is None and ledger.taken == 0


def test_drain_releases_a_waiting_retry() -> None:
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1)], 1)
    ledger.start_call(0.0)
    ledger.retry_at(1, 5.0)
    ledger.release_unsent()
    assert ledger.pending == [Released(1)] and ledger.work_delay_s(0.0) is None


def test_each_batch_has_its_own_corr_id_and_its_ack_frees_only_its_slots() -> None:
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1), recipient(2)], 1)
    ledger.start_call(0.0)
    ledger.start_call(0.0)
    ledger.record(Sent(1, "m1", 0))
    first = ledger.next_batch(0.0)
    ledger.record(SendFailed(2, "MessageRejected", "no", 0))
    second = ledger.next_batch(0.0)
    assert first is not None and second is not None and first.corr_id != second.corr_id
    assert ledger.ack(first.corr_id).freed == 1 and ledger.slots_used == 1
    assert ledger.ack(second.corr_id).freed == 1 and ledger.slots_used == 0


def test_an_unacknowledged_batch_is_sent_again_once_the_timeout_has_passed() -> None:
    ledger = Ledger(2, debug=True)
    ledger.deliver([recipient(1)], 1)
    ledger.start_call(1000.0)
    ledger.record(Sent(1, "m", 0))
    batch = ledger.next_batch(1000.0)
    assert batch is not None
    assert ledger.stale(1000.5, timeout_s=1.0) == []
    assert ledger.stale(1001.0, timeout_s=1.0) == [RecordOutcomes(batch.corr_id, "sender", batch.outcomes)]
    assert ledger.stale(1001.5, timeout_s=1.0) == [], "the clock restarts at the resend"


@pytest.mark.parametrize(
    ("in_flight_limit", "taken", "demand"),
    [
        (4, 7, 0),  # room 1 of 8: not worth a message
        (4, 6, 2),  # a quarter of the capacity free: ask
        (3, 5, 1),  # a quarter of 6 rounds down to 1
        (1, 1, 1),  # a capacity of 2: one free is worth asking for
    ],
)
def test_demand_is_asked_once_a_quarter_of_the_capacity_is_free(in_flight_limit: int, taken: int, demand: int) -> None:
    ledger = Ledger(in_flight_limit, debug=True)
    ledger.deliver([recipient(i) for i in range(1, taken + 1)], 1)
    assert ledger.demand() == demand


def test_promises_add_up_and_delivered_work_settles_them() -> None:
    ledger = Ledger(4, debug=True)
    ledger.promise(3)
    ledger.promise(3)
    assert ledger.demand() == 2
    ledger.deliver([recipient(i) for i in range(1, 8)], 1)  # more than was asked: the promise is spent
    assert ledger.demand() == 0
    ledger.hold(HoldTopic(1, "ingest", "a", "cancelled"))
    assert ledger.demand() == 8


def test_a_recorded_send_uses_up_one_send_of_the_quota() -> None:
    ledger = Ledger(4, debug=True)
    ledger.deliver([recipient(1), recipient(2)], 1)
    ledger.quota_change(2)
    ledger.start_call(0.0)
    ledger.record(Sent(1, "m", 0))
    assert ledger.quota_allows()
    ledger.start_call(0.0)
    assert not ledger.quota_allows()


def test_an_unsubscribe_holds_the_address_in_its_list_only_whatever_the_case() -> None:
    ledger = Ledger(4, debug=True)
    ann_news = Recipient(1, "Ann@X.io", "a", 1, "news")
    ann_promo = Recipient(2, "ann@x.io", "b", 1, "promo")
    bob_news = Recipient(3, "bob@x.io", "a", 1, "news")
    ledger.deliver([ann_news, ann_promo, bob_news], 1)
    effects = ledger.hold(HoldAddress(5, "ingest", 1, "ANN@x.io", "news"))
    assert effects.hold_rows == HoldAddressRows(5, "ingest", 1, "ANN@x.io", "news", keep=())
    assert [r.recipient_id for r in ledger.queued] == [2, 3]


def test_an_unsubscribe_from_all_mail_holds_the_address_in_every_list() -> None:
    ledger = Ledger(4, debug=True)
    ledger.deliver([Recipient(1, "ann@x.io", "a", 1, "news"), Recipient(2, "ann@x.io", "b", 1, None)], 1)
    ledger.deliver([Recipient(3, "bob@x.io", "a", 1, "news")], 1)
    ledger.hold(HoldAddress(5, "ingest", 1, "ann@x.io", None))
    assert [r.recipient_id for r in ledger.queued] == [3]


def test_a_topic_hold_tells_the_recorder_its_reason() -> None:
    # The reputation guard's pause: the reason is shown as the topic's paused_reason.
    ledger = Ledger(2, debug=True)
    effects = ledger.hold(HoldTopic(1, "recorder", "a", "paused", reason="bounce rate 5.1%"))
    assert effects.hold_rows == HoldTopicRows(1, "recorder", "a", "paused", keep=(), reason="bounce rate 5.1%")


def test_work_covered_by_a_cancel_and_an_unsubscribe_waits_for_both_answers() -> None:
    # Given a cancel of topic a and an unsubscribe of ann from all mail, both unanswered
    ledger = Ledger(4, debug=True)
    ledger.hold(HoldTopic(1, "ingest", "a", "cancelled"))
    ledger.hold(HoldAddress(2, "ingest", 9, "ann@x.io", None))
    ledger.deliver([recipient(1), Recipient(2, "ann@x.io", "a", 1)], 5)  # claimed after both cuts
    # When the cancel is answered, then ann's recipient still waits for the unsubscribe's answer
    ledger.hold_answered(held("a", 3))
    assert [r.recipient_id for r in ledger.queued] == [1] and ledger.parked_count == 1
    ledger.hold_answered(AddressHeld(2, "ann@x.io", None, 0, True, 3))
    assert [r.recipient_id for r in ledger.queued] == [1, 2] and ledger.parked_count == 0


def test_work_claimed_ahead_waits_until_it_is_due_and_a_cancel_still_takes_it() -> None:
    ledger = Ledger(LIMIT, debug=True)
    # Claimed at wall time 10.000 s (monotonic 500.0) for 10.800 s and 11.500 s.
    soon = Recipient(1, "a@x.io", "a", 1, due_at_ms=10_800)
    later = Recipient(2, "b@x.io", "b", 1, due_at_ms=11_500)
    ledger.deliver([soon, later], 1, now=500.0, now_ms=10_000)
    assert ledger.work_delay_s(500.0) == pytest.approx(0.8)
    assert ledger.start_batch(500.79, 1) == [], "not a moment before it is due"
    assert ledger.start_batch(500.8, 2) == [soon]
    # A cancel of the later one's topic takes it from among the early: the recorder holds its row.
    effects = ledger.hold(HoldTopic(1, "ingest", "b", Status.CANCELLED))
    assert effects.hold_rows is not None and 2 not in effects.hold_rows.keep
    assert ledger.work_delay_s(502.0) is None and ledger.start_batch(502.0, 1) == []


def test_work_claimed_ahead_goes_back_to_pending_at_a_stop() -> None:
    ledger = Ledger(LIMIT, debug=True)
    ledger.deliver([Recipient(1, "a@x.io", "a", 1, due_at_ms=20_000)], 1, now=0.0, now_ms=10_000)
    ledger.release_unsent()
    assert ledger.pending == [Released(1)]
