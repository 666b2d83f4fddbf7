"""Garbage on a queue (a foreign object, something that cannot be unpickled, a message the
stage does not handle) is logged and dropped, and the stage keeps going."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from pipeline.channels import Inbox
from pipeline.db.schema import open_writer
from pipeline.messages import CampaignFacts, Demand, NewMessage, Ping, Stored, StoreMessages
from stages.recorder import Writer, apply_batch


def explode() -> None:
    raise RuntimeError("this object cannot be rebuilt")


class Unpicklable:
    """Pickles fine on the sending side; blows up when the receiver unpickles it."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return explode, ()


def test_the_inbox_drops_garbage_and_delivers_what_follows(caplog: pytest.LogCaptureFixture) -> None:
    queue = multiprocessing.get_context("spawn").Queue(16)

    async def scenario() -> object:
        inbox = Inbox(queue, "test")
        inbox.start()
        for garbage in ({"type": "ClaimDue"}, "a string", Unpicklable()):
            queue.put(garbage)
        queue.put(Ping(7, "ingest"))
        try:
            return await asyncio.wait_for(inbox.get(), 10)
        finally:
            assert await asyncio.to_thread(inbox.close)

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(scenario()) == Ping(7, "ingest")
    messages = caplog.text
    assert "dropped a foreign object of type dict" in messages
    assert "dropped a foreign object of type str" in messages
    assert "dropped an unreadable message" in messages


def test_the_recorder_drops_a_message_it_does_not_handle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = Writer(open_writer(tmp_path / "g.db"))
    good = StoreMessages(1, "ingest", (NewMessage("t", "S", "<p>", ("a@x.io",)),), 0, CampaignFacts(1))
    with caplog.at_level(logging.ERROR):
        replies = apply_batch(writer, logging.getLogger("test"), [Demand(5), good], Counter())
    assert [type(reply) for _, reply in replies] == [Stored]
    assert "Demand failed and was rolled back" in caplog.text
