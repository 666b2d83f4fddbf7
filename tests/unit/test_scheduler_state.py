"""The scheduler's decisions, driven directly: when to claim, how much, and how long to sleep."""

from __future__ import annotations

from pipeline.messages import Claimed, Recipient
from stages.scheduler import CLAIM_AHEAD_MS, CLAIM_TIMEOUT_S, PAGE_SIZE, SchedulerState


def recipients(count: int) -> tuple[Recipient, ...]:
    return tuple(Recipient(i, f"u{i}@x.io", "t", 1) for i in range(count))


def test_at_start_it_asks_the_database_as_soon_as_the_sender_has_room() -> None:
    state = SchedulerState()
    assert state.claim_limit(now=1_000) == 0, "no demand yet: nothing to claim for"
    assert state.sleep_s(now=1_000) is None, "and nothing to wake for but a message"
    state.demand = 40
    assert state.claim_limit(now=1_000) == 40


def test_a_claim_is_never_larger_than_the_demand_or_a_page() -> None:
    state = SchedulerState(demand=10 * PAGE_SIZE)
    assert state.claim_limit(now=0) == PAGE_SIZE
    state.demand = 7
    assert state.claim_limit(now=0) == 7


def test_one_claim_at_a_time_and_a_lost_answer_is_asked_again() -> None:
    # A monotonic clock does not start at 0: the claim went out at 5 000 s.
    sent = 5_000_000
    state = SchedulerState(demand=50)
    state.claim_sent_at_ms = sent
    assert state.claim_limit(now=sent + 1_000) == 0
    assert state.sleep_s(now=sent + 1_000) == CLAIM_TIMEOUT_S - 1
    assert state.sleep_s(now=sent + 9_500) == 0.5
    assert state.claim_limit(now=sent + int(CLAIM_TIMEOUT_S * 1000)) == 50, "the recorder restarted: ask again"


def test_an_answer_lowers_the_demand_and_sets_the_next_wake_up() -> None:
    state = SchedulerState(demand=50)
    state.claim_sent_at_ms = 0
    state.on_claimed(Claimed(1, recipients(20), next_due_ms=9_000))
    assert (state.demand, state.claimed_total, state.claim_sent_at_ms) == (30, 20, None)
    assert state.claim_limit(now=5_000) == 0, "nothing due before 9 s"
    assert state.sleep_s(now=5_000) == 3.0, "it wakes CLAIM_AHEAD_MS (1 s) before the due time"
    assert state.claim_limit(now=9_000 - CLAIM_AHEAD_MS - 1) == 0, "and claims not a moment earlier"
    assert state.claim_limit(now=9_000 - CLAIM_AHEAD_MS) == 30


def test_work_added_while_a_claim_is_in_flight_is_not_forgotten() -> None:
    """The claim's answer may predate the POST; the earlier due time must survive it."""
    state = SchedulerState(demand=50)
    state.claim_sent_at_ms = 0
    state.on_work_added(2_000)
    state.on_work_added(7_000)
    state.on_claimed(Claimed(1, (), next_due_ms=None))
    assert state.next_due_ms == 2_000
    assert state.claim_limit(now=2_000) == 50


def test_nothing_pending_sleeps_until_a_message() -> None:
    state = SchedulerState(demand=50)
    state.on_claimed(Claimed(1, (), next_due_ms=None))
    assert state.next_due_ms is None and state.sleep_s(now=0) is None
    assert state.claim_limit(now=0) == 0
    state.on_work_added(CLAIM_AHEAD_MS + 500)
    assert state.sleep_s(now=0) == 0.5
    state.on_work_added(500)
    assert state.sleep_s(now=0) == 0.0, "due within the claim-ahead span: claim now"


def test_later_work_does_not_postpone_work_already_due_sooner() -> None:
    state = SchedulerState(demand=50)
    state.on_claimed(Claimed(1, (), next_due_ms=1_000))
    state.on_work_added(5_000)
    assert state.claim_limit(now=1_000) == 50


def test_a_claim_that_fills_the_demand_asks_for_no_more() -> None:
    state = SchedulerState(demand=20)
    state.claim_sent_at_ms = 0
    state.on_claimed(Claimed(1, recipients(20), next_due_ms=0))
    assert state.claim_limit(now=0) == 0 and state.sleep_s(now=0) is None


def test_a_demand_of_one_is_claimed_and_waited_for() -> None:
    state = SchedulerState(demand=1)
    assert state.claim_limit(now=0) == 1
    state.on_claimed(Claimed(1, (), next_due_ms=3_000))
    assert state.sleep_s(now=1_000) == 1.0


def test_every_answer_adds_to_the_claimed_total_and_sets_the_wake_up() -> None:
    # The shutdown summary line reports it.
    state = SchedulerState(demand=50)
    state.on_claimed(Claimed(1, recipients(20), next_due_ms=None))
    state.on_claimed(Claimed(2, recipients(5), next_due_ms=9_000))
    assert state.claimed_total == 25 and state.sleep_s(now=0) == 8.0
