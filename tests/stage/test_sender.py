"""The sender's real `run(ctx)` on the outbox backend (.eml files), beside the real recorder.

The test plays the scheduler: it claims through the recorder and delivers to the sender.
What a user relies on: a delivered recipient becomes a mail with its tracking pixel and
is recorded as sent; a stop finishes what is in flight, hands the rest back to pending
(nothing is lost or left claimed) and tells the recorder and the scheduler.
"""

from __future__ import annotations

from dataclasses import replace
from email import message_from_bytes, policy
from pathlib import Path

from config.settings import Settings
from pipeline.clock import now_ms
from pipeline.memory_channels import MemoryPipeline
from pipeline.messages import CampaignFacts, ClaimDue, Claimed, Deliver, Demand, EndOfStream, NewMessage, StoreMessages
from tests.stage.harness import StartStage, eventually, finished, statuses


async def stored_and_claimed(pipeline: MemoryPipeline, emails: tuple[str, ...], limit: int) -> Claimed:
    """As ingest then the scheduler would: store a campaign, then claim up to `limit` of it."""
    message = NewMessage("t1", "Hello", "<html><body><p>Hi there</p></body></html>", emails)
    pipeline.tell("recorder", StoreMessages(1, "ingest", (message,), 0, CampaignFacts(total=len(emails))))
    await pipeline.next_for("ingest")
    pipeline.tell("recorder", ClaimDue(1, "scheduler", limit, now_ms()))
    claimed = await pipeline.next_for("scheduler")
    assert isinstance(claimed, Claimed)
    return claimed


async def demand(pipeline: MemoryPipeline) -> int:
    asked = await pipeline.next_for("scheduler", timeout_s=10)
    assert isinstance(asked, Demand) and asked.count > 0
    return asked.count


def eml_files(outbox: Path) -> list[Path]:
    return sorted(outbox.glob("*.eml")) if outbox.exists() else []


async def test_delivered_recipients_are_mailed_with_their_pixel_and_recorded_as_sent(
    pipeline: MemoryPipeline, start: StartStage, settings: Settings
) -> None:
    recorder = start(pipeline, "recorder")
    await pipeline.ready["recorder"].wait()
    sender = start(pipeline, "sender")
    room = await demand(pipeline)
    emails = ("a@example.org", "b@example.org", "c@example.org")
    claimed = await stored_and_claimed(pipeline, emails, room)
    pipeline.tell("sender", Deliver(claimed.recipients, claimed.claim_seq))
    # The sender's outcomes reach the recorder, which acknowledges them
    await eventually(lambda: statuses(settings.database_path) == {"sent": 3}, what="3 recipients sent")
    outbox = eml_files(settings.ses.outbox_dir)
    mails = [message_from_bytes(path.read_bytes(), policy=policy.default) for path in outbox]
    assert sorted(str(mail["To"]) for mail in mails) == sorted(emails)
    for mail in mails:
        html = mail.get_body(("html",))
        assert html is not None and f"{settings.server_url}/v1/events/open" in html.get_content()
    # When it is stopped, it says so to the recorder and the scheduler, and returns
    pipeline.stop("sender")
    await finished(sender)
    assert pipeline.outbox("sender", "recorder").sent[-1] == EndOfStream("sender")
    assert pipeline.outbox("sender", "scheduler").sent[-1] == EndOfStream("sender")
    pipeline.tell("recorder", EndOfStream("ingest"), EndOfStream("scheduler"))
    await finished(recorder)


async def test_a_stop_hands_unsent_work_back_and_leaves_nothing_claimed(settings: Settings, start: StartStage) -> None:
    # Given a sender slow enough that most of what it holds is still waiting when it stops
    slow = replace(settings, ses=replace(settings.ses, max_send_per_s=2.0))
    pipeline = MemoryPipeline(slow)
    start(pipeline, "recorder")
    await pipeline.ready["recorder"].wait()
    sender = start(pipeline, "sender")
    room = await demand(pipeline)
    claimed = await stored_and_claimed(pipeline, tuple(f"u{i}@example.org" for i in range(room)), room)
    pipeline.tell("sender", Deliver(claimed.recipients, claimed.claim_seq))
    await eventually(lambda: eml_files(slow.ses.outbox_dir), what="the first mail")
    # When it is stopped
    pipeline.stop("sender")
    await finished(sender)
    # Then every recipient is either sent (with its mail) or pending again, none left claimed
    counts = statuses(slow.database_path)
    assert set(counts) <= {"sent", "pending"} and sum(counts.values()) == room
    assert counts.get("pending", 0) > 0
    assert len(eml_files(slow.ses.outbox_dir)) == counts.get("sent", 0)


async def test_work_delivered_behind_the_stop_goes_back_to_pending(
    pipeline: MemoryPipeline, start: StartStage, settings: Settings
) -> None:
    # Given work claimed for the sender and a stop that reaches it before the Deliver does
    start(pipeline, "recorder")
    await pipeline.ready["recorder"].wait()
    sender = start(pipeline, "sender")
    room = await demand(pipeline)
    claimed = await stored_and_claimed(pipeline, ("a@example.org", "b@example.org"), room)
    assert statuses(settings.database_path) == {"sending": 2}
    pipeline.stop("sender")
    pipeline.tell("sender", Deliver(claimed.recipients, claimed.claim_seq))
    await finished(sender)
    # Then nothing is sent and nothing stays claimed: both are pending again
    await eventually(lambda: statuses(settings.database_path) == {"pending": 2}, what="both rows pending again")
    assert not eml_files(settings.ses.outbox_dir)
