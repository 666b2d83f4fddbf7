"""The in-memory channels behave like the queues they stand in for, or stage tests prove little:
in order, bounded (a full inbox slows its writer), and woken on stop."""

from __future__ import annotations

import asyncio

import pytest

from config.settings import Settings
from pipeline.channels import ChannelFull
from pipeline.memory_channels import MemoryInbox, MemoryOutbox, MemoryPipeline
from pipeline.messages import Demand, WakeUp


async def test_messages_arrive_in_order_and_the_outbox_remembers_them() -> None:
    inbox = MemoryInbox()
    outbox = MemoryOutbox("scheduler", inbox)
    await outbox.put(Demand(1))
    assert outbox.put_nowait(Demand(2))
    assert [await inbox.get(), inbox.get_nowait(), inbox.get_nowait()] == [Demand(1), Demand(2), None]
    assert outbox.sent == [Demand(1), Demand(2)]


async def test_a_full_inbox_refuses_at_once_or_makes_the_writer_wait() -> None:
    inbox = MemoryInbox(capacity=1)
    outbox = MemoryOutbox("scheduler", inbox)
    assert outbox.put_nowait(Demand(1)) and not outbox.put_nowait(Demand(2))
    with pytest.raises(ChannelFull):
        await outbox.put(Demand(2), timeout_s=0.05)
    # A writer waiting for room goes on as soon as the reader takes one
    waiting = asyncio.create_task(outbox.put(Demand(3), timeout_s=5))
    assert await inbox.get() == Demand(1)
    await asyncio.wait_for(waiting, 5)
    assert inbox.pending() == [Demand(3)] and outbox.sent == [Demand(1), Demand(3)]


async def test_get_within_gives_none_when_nothing_comes() -> None:
    assert await MemoryInbox().get_within(0.01) is None


async def test_stopping_a_stage_wakes_its_waiting_reader(settings: Settings) -> None:
    pipeline = MemoryPipeline(settings)
    ctx = pipeline.context("scheduler")
    reader = asyncio.create_task(ctx.inbox.get())
    await asyncio.sleep(0)  # one loop turn: the reader is now blocked in get()
    pipeline.stop("scheduler")
    assert await asyncio.wait_for(reader, 5) == WakeUp() and ctx.stopping.is_set()


def test_a_context_gets_an_outbox_per_edge_of_the_table_and_no_other(settings: Settings) -> None:
    pipeline = MemoryPipeline(settings)
    assert set(pipeline.context("scheduler").outboxes) == {"recorder", "sender"}
    with pytest.raises(KeyError):
        pipeline.outbox("scheduler", "ingest")
