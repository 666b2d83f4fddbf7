"""The pixel's open batcher: one message per burst, flushed on stop, retried only when safe."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from pipeline.channels import ChannelFull
from pipeline.messages import Message, OpensRecorded, RecordOpens
from stages.ingest import opens
from stages.ingest.opens import OpenBatcher

LOG = logging.getLogger("test")


class Recorder:
    """Stands in for the ask to the recorder: records each batch, or fails as told."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.batches: list[tuple[tuple[str, int], ...]] = []
        self.failures = failures or []

    async def ask(self, build: Callable[[int], Message]) -> Message:
        message = build(len(self.batches))
        assert isinstance(message, RecordOpens)
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(message.opens)
        return OpensRecorded(message.corr_id, len(message.opens))


async def test_a_burst_of_opens_is_one_batch() -> None:
    recorder = Recorder()
    batcher = OpenBatcher(recorder.ask, LOG)
    for i in range(50):
        batcher.add(f"q{i}", 1000 + i)
    await asyncio.sleep(opens.GATHER_S * 10)
    assert recorder.batches == [tuple((f"q{i}", 1000 + i) for i in range(50))]


async def test_drain_sends_what_is_pending_without_waiting_for_the_timer() -> None:
    recorder = Recorder()
    batcher = OpenBatcher(recorder.ask, LOG)
    batcher.add("q7", 1)
    await batcher.drain(1.0)
    assert recorder.batches == [(("q7", 1),)]


async def test_a_full_queue_is_retried_and_a_timeout_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opens, "RETRY_DELAY_S", 0.001)
    recorder = Recorder([ChannelFull("recorder"), ChannelFull("recorder")])
    batcher = OpenBatcher(recorder.ask, LOG)
    batcher.add("q1", 1)
    await batcher.drain(1.0)
    assert recorder.batches == [(("q1", 1),)] and batcher.lost == 0
    # A timed-out batch may still be committed by the recorder: retrying could count it twice
    recorder.failures = [TimeoutError()]
    batcher.add("q2", 2)
    await batcher.drain(1.0)
    assert recorder.batches == [(("q1", 1),)] and batcher.lost == 1


async def test_opens_beyond_the_uncommitted_cap_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opens, "MAX_UNCOMMITTED", 3)
    stalled: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def never_answers(build: Callable[[int], Message]) -> Message:
        return await stalled

    batcher = OpenBatcher(never_answers, LOG)
    for i in range(3):
        batcher.add(f"q{i}", i)
    batcher.flush()
    batcher.add("q9", 9)
    batcher.flush()
    assert batcher.lost == 1
    stalled.cancel()
