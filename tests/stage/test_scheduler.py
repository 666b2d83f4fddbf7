"""The scheduler's real `run(ctx)`, in-process; the test plays the recorder and the sender.

What a user relies on: only what the sender has room for leaves the database (a million
scheduled recipients stay in SQLite), what is claimed reaches the sender, scheduled work
goes out at its time and not before, and a stop is passed on downstream.
"""

from __future__ import annotations

from pipeline.clock import now_ms
from pipeline.memory_channels import MemoryPipeline
from pipeline.messages import ClaimDue, Claimed, Deliver, Demand, EndOfStream, Recipient, WorkAdded
from stages.scheduler import CLAIM_AHEAD_MS, PAGE_SIZE
from tests.stage.harness import StartStage, finished


def recipients(count: int, first_id: int = 1) -> tuple[Recipient, ...]:
    return tuple(Recipient(i, f"u{i}@example.org", "t1", 1) for i in range(first_id, first_id + count))


async def next_claim(pipeline: MemoryPipeline) -> ClaimDue:
    claim = await pipeline.next_for("recorder")
    assert isinstance(claim, ClaimDue), claim
    return claim


async def test_claims_only_what_the_sender_has_room_for_and_delivers_it(
    pipeline: MemoryPipeline, start: StartStage
) -> None:
    start(pipeline, "scheduler")
    # Given the sender has room for 3 (and work may be due from before the start)
    pipeline.tell("scheduler", Demand(3))
    # Then the scheduler asks the recorder for at most 3, with the answer coming back to it
    claim = await next_claim(pipeline)
    assert (claim.limit, claim.reply_to) == (3, "scheduler")
    # When the recorder answers with 3 recipients and nothing else due
    claimed = recipients(3)
    pipeline.tell("scheduler", Claimed(claim.corr_id, claimed, next_due_ms=None, claim_seq=7))
    # Then the sender gets exactly those, with the claim's sequence number
    assert await pipeline.next_for("sender") == Deliver(claimed, 7)
    # And new work waits for room: WorkAdded alone claims nothing, the next Demand does
    pipeline.tell("scheduler", WorkAdded(now_ms()), Demand(2))
    assert (await next_claim(pipeline)).limit == 2


async def test_a_large_demand_is_claimed_in_pages(pipeline: MemoryPipeline, start: StartStage) -> None:
    start(pipeline, "scheduler")
    pipeline.tell("scheduler", Demand(PAGE_SIZE + 200))
    first = await next_claim(pipeline)
    assert first.limit == PAGE_SIZE
    # The recorder filled the page and says more is due now: the rest of the room is the next page
    pipeline.tell("scheduler", Claimed(first.corr_id, recipients(PAGE_SIZE), next_due_ms=now_ms(), claim_seq=1))
    second = await next_claim(pipeline)
    assert second.limit == 200 and second.corr_id != first.corr_id
    delivered = await pipeline.next_for("sender")
    assert isinstance(delivered, Deliver) and len(delivered.recipients) == PAGE_SIZE


async def test_an_empty_page_is_not_delivered(pipeline: MemoryPipeline, start: StartStage) -> None:
    start(pipeline, "scheduler")
    pipeline.tell("scheduler", Demand(5))
    claim = await next_claim(pipeline)
    pipeline.tell("scheduler", Claimed(claim.corr_id, (), next_due_ms=None, claim_seq=1))
    pipeline.stop("scheduler")
    # The first thing the sender hears is the stop, not an empty Deliver
    assert await pipeline.next_for("sender") == EndOfStream("scheduler")


async def test_scheduled_work_is_claimed_a_moment_ahead_of_its_time_and_not_before(
    pipeline: MemoryPipeline, start: StartStage
) -> None:
    start(pipeline, "scheduler")
    pipeline.tell("scheduler", Demand(5))
    claim = await next_claim(pipeline)
    # Given the recorder says nothing is due now, but something is due 0.3 s after the claim-ahead span
    due_ms = now_ms() + CLAIM_AHEAD_MS + 300
    pipeline.tell("scheduler", Claimed(claim.corr_id, (), next_due_ms=due_ms, claim_seq=1))
    # Then the scheduler wakes by itself and claims it CLAIM_AHEAD_MS before it is due, not earlier
    again = await next_claim(pipeline)
    assert again.due_by_ms >= due_ms
    assert now_ms() >= due_ms - CLAIM_AHEAD_MS


async def test_on_stop_it_tells_the_recorder_and_the_sender_and_returns(
    pipeline: MemoryPipeline, start: StartStage
) -> None:
    scheduler = start(pipeline, "scheduler")
    await pipeline.ready["scheduler"].wait()
    pipeline.stop("scheduler")
    await finished(scheduler)
    assert await pipeline.next_for("recorder") == EndOfStream("scheduler")
    assert await pipeline.next_for("sender") == EndOfStream("scheduler")
