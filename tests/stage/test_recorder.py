"""The recorder's real `run(ctx)`, in-process, on a real SQLite file; the test plays the other stages.

What a user relies on: a POST is answered only once its rows are committed, due work is
claimed for the scheduler, work claimed before a restart is claimed again, and the
recorder stops once every producer is done (or at its deadline, if one never says so).
"""

from __future__ import annotations

import json
from dataclasses import replace

from config.settings import Settings
from pipeline.clock import now_ms
from pipeline.memory_channels import MemoryPipeline
from pipeline.messages import (
    CampaignFacts,
    ClaimDue,
    Claimed,
    EndOfStream,
    NewMessage,
    Ping,
    Pong,
    Stored,
    StoreMessages,
)
from stages.recorder import PRODUCERS
from tests.stage.harness import StartStage, finished, statuses


def store(corr_id: int, emails: tuple[str, ...], topic_id: str = "t1", due_at_ms: int = 0) -> StoreMessages:
    message = NewMessage(topic_id, "Hello", "<p>Hi</p>", emails)
    return StoreMessages(corr_id, "ingest", (message,), due_at_ms, CampaignFacts(total=len(emails)))


def end_of_streams(*producers: str) -> list[EndOfStream]:
    return [EndOfStream(producer) for producer in producers]


async def test_a_store_is_answered_once_its_rows_are_committed(
    pipeline: MemoryPipeline, start: StartStage, settings: Settings
) -> None:
    start(pipeline, "recorder")
    pipeline.tell("recorder", store(41, ("a@example.org", "b@example.org")))
    reply = await pipeline.next_for("ingest")
    assert isinstance(reply, Stored) and reply.corr_id == 41
    assert json.loads(reply.answer)["success"] == 2
    # Another reader sees both rows as soon as the answer is out
    assert statuses(settings.database_path) == {"pending": 2}


async def test_a_claim_is_answered_to_the_scheduler_with_the_due_rows(
    pipeline: MemoryPipeline, start: StartStage, settings: Settings
) -> None:
    start(pipeline, "recorder")
    later_ms = now_ms() + 3_600_000
    now_due, scheduled = store(1, ("a@example.org", "b@example.org")), store(2, ("c@example.org",), "t2", later_ms)
    pipeline.tell("recorder", now_due, scheduled)
    await pipeline.next_for("ingest")
    await pipeline.next_for("ingest")
    pipeline.tell("recorder", ClaimDue(9, "scheduler", 10, now_ms()))
    claimed = await pipeline.next_for("scheduler")
    assert isinstance(claimed, Claimed) and claimed.corr_id == 9
    assert sorted(r.email for r in claimed.recipients) == ["a@example.org", "b@example.org"]
    # The scheduled one stays in the database, and the scheduler learns when to wake for it
    assert claimed.next_due_ms == later_ms
    assert statuses(settings.database_path) == {"sending": 2, "pending": 1}


async def test_work_claimed_before_a_restart_is_claimed_again(
    pipeline: MemoryPipeline, start: StartStage, settings: Settings
) -> None:
    # Given a claim whose sender never reported back (the tree was killed)
    first = start(pipeline, "recorder")
    pipeline.tell("recorder", store(1, ("a@example.org", "b@example.org")), ClaimDue(2, "scheduler", 10, now_ms()))
    before = await pipeline.next_for("scheduler")
    assert isinstance(before, Claimed) and len(before.recipients) == 2
    pipeline.tell("recorder", *end_of_streams(*PRODUCERS))
    await finished(first)
    # When a new recorder starts on the same file
    restarted = MemoryPipeline(settings)
    start(restarted, "recorder")
    restarted.tell("recorder", ClaimDue(1, "scheduler", 10, now_ms()))
    # Then the same recipients are claimed again: nothing accepted is lost
    after = await restarted.next_for("scheduler")
    assert isinstance(after, Claimed)
    assert sorted(r.recipient_id for r in after.recipients) == sorted(r.recipient_id for r in before.recipients)


async def test_it_serves_until_every_producer_has_said_end_of_stream(
    pipeline: MemoryPipeline, start: StartStage
) -> None:
    recorder = start(pipeline, "recorder")
    *first, last = sorted(PRODUCERS)
    pipeline.tell("recorder", *end_of_streams(*first), Ping(3, "ingest"))
    # Still answering after all producers but one are done
    assert await pipeline.next_for("ingest") == Pong(3)
    assert not recorder.done()
    pipeline.tell("recorder", EndOfStream(last))
    await finished(recorder)


async def test_when_stopping_it_gives_up_on_a_silent_producer_at_its_deadline(
    settings: Settings, start: StartStage
) -> None:
    # A drain budget of 0.6 s leaves the recorder 0.1 s after its margin
    pipeline = MemoryPipeline(replace(settings, shutdown_timeout_s=0.6))
    recorder = start(pipeline, "recorder")
    # Given every producer but one has said goodbye
    *others, _silent = sorted(PRODUCERS)
    pipeline.tell("recorder", *end_of_streams(*others))
    await pipeline.ready["recorder"].wait()
    pipeline.stop("recorder")
    await finished(recorder, timeout_s=3.0)


async def test_every_request_in_one_batch_is_answered(pipeline: MemoryPipeline, start: StartStage) -> None:
    # Given many stores queued before the recorder takes any (one group commit)
    pipeline.tell("recorder", *(store(i, (f"u{i}@example.org",)) for i in range(1, 51)))
    start(pipeline, "recorder")
    answers = [await pipeline.next_for("ingest") for _ in range(50)]
    assert sorted(a.corr_id for a in answers if isinstance(a, Stored)) == list(range(1, 51))
