"""Recorder, sender and scheduler together in one event loop, wired by `WRITES_TO`.

The test plays ingest. What a user relies on: a stored campaign is sent and recorded
with nobody but the stages moving it, and a stop passed on as EndOfStream brings every
stage to an end, in the supervisor's reverse start order.
"""

from __future__ import annotations

from config.settings import Settings
from pipeline.memory_channels import MemoryPipeline
from pipeline.messages import CampaignFacts, EndOfStream, NewMessage, Stored, StoreMessages, WorkAdded
from tests.stage.harness import StartStage, eventually, finished, statuses


async def test_a_stored_campaign_is_sent_and_every_stage_stops_on_end_of_stream(
    pipeline: MemoryPipeline, start: StartStage, settings: Settings
) -> None:
    tasks = {}
    for stage in ("recorder", "sender", "scheduler"):  # the supervisor's start order
        tasks[stage] = start(pipeline, stage)
        await pipeline.ready[stage].wait()
    emails = tuple(f"u{i}@example.org" for i in range(25))
    message = NewMessage("t1", "Hello", "<p>Hi</p>", emails)
    pipeline.tell("recorder", StoreMessages(1, "ingest", (message,), 0, CampaignFacts(total=len(emails))))
    assert isinstance(await pipeline.next_for("ingest"), Stored)
    pipeline.tell("scheduler", WorkAdded(0))
    await eventually(lambda: statuses(settings.database_path) == {"sent": 25}, what="25 recipients sent")
    assert len(list(settings.ses.outbox_dir.glob("*.eml"))) == 25
    # Stop in reverse: ingest says it is done, then the scheduler, then the sender
    pipeline.tell("recorder", EndOfStream("ingest"))
    for stage in ("scheduler", "sender"):
        pipeline.stop(stage)
        await finished(tasks[stage])
    await finished(tasks["recorder"])
