"""SNS notifications go to the recorder together, and each request gets its own answer
after the commit (in memory: the recorder's side is a queue of asks this test answers)."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.channels import ChannelFull
from pipeline.messages import EventsRecorded, EventsRecordedTogether, Message, RecordEventsTogether, Refusal, Refused
from stages.ingest.event_batches import IN_FLIGHT, EventBatcher


class Recorder:
    """Takes each ask and holds it until the test answers it."""

    def __init__(self) -> None:
        self.asked: asyncio.Queue[tuple[RecordEventsTogether, asyncio.Future[Message]]] = asyncio.Queue()
        self.corr_ids = 0

    async def ask(self, build: object) -> Message:
        self.corr_ids += 1
        request = build(self.corr_ids)  # type: ignore[operator]
        assert isinstance(request, RecordEventsTogether)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        await self.asked.put((request, answer))
        return await answer

    async def next(self) -> tuple[RecordEventsTogether, asyncio.Future[Message]]:
        return await asyncio.wait_for(self.asked.get(), timeout=5)


def recorded(request: RecordEventsTogether) -> EventsRecordedTogether:
    return EventsRecordedTogether(request.corr_id, tuple(EventsRecorded(i.corr_id, 1, 1) for i in request.items))


async def test_notifications_that_arrive_together_go_as_one_message_and_each_gets_its_answer() -> None:
    recorder = Recorder()
    batcher = EventBatcher(recorder.ask)
    requests = [asyncio.ensure_future(batcher.record(f"sns-{i}", "{}", ())) for i in range(5)]

    request, answer = await recorder.next()
    assert [item.sns_message_id for item in request.items] == [f"sns-{i}" for i in range(5)]
    assert not any(r.done() for r in requests)  # nobody is answered before the commit
    answer.set_result(
        EventsRecordedTogether(
            request.corr_id,
            (*(EventsRecorded(i.corr_id, 1, 1) for i in request.items[:4]), Refused(0, Refusal.UNPROCESSABLE, "no")),
        )
    )
    answers = await asyncio.gather(*requests)
    assert [type(a) for a in answers] == [EventsRecorded] * 4 + [Refused]


async def test_while_the_recorder_has_enough_in_hand_the_next_ones_wait_and_go_together() -> None:
    recorder = Recorder()
    batcher = EventBatcher(recorder.ask)
    first = []
    for i in range(IN_FLIGHT):  # each alone: nothing was out when it came
        first.append(asyncio.ensure_future(batcher.record(f"early-{i}", "{}", ())))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    out = [await recorder.next() for _ in range(IN_FLIGHT)]
    later = [asyncio.ensure_future(batcher.record(f"later-{i}", "{}", ())) for i in range(3)]
    await asyncio.sleep(0.05)
    assert recorder.asked.empty()  # they wait: IN_FLIGHT messages are out

    request, answer = out[0]
    answer.set_result(recorded(request))
    waited, waited_answer = await recorder.next()
    assert [item.sns_message_id for item in waited.items] == ["later-0", "later-1", "later-2"]
    assert isinstance(await first[0], EventsRecorded)
    waited_answer.set_result(recorded(waited))
    assert [type(a) for a in await asyncio.gather(*later)] == [EventsRecorded] * 3


@pytest.mark.parametrize("problem", [TimeoutError, ChannelFull])
async def test_when_the_recorder_does_not_take_or_confirm_them_every_request_hears_so(problem: type) -> None:
    async def fails(build: object) -> Message:
        raise problem()

    batcher = EventBatcher(fails)
    results = await asyncio.gather(*(batcher.record(f"sns-{i}", "{}", ()) for i in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [problem] * 3
