"""SNS notifications go to the recorder together, and each is answered after its commit.

One message per notification cost ingest more than the signature check: each was pickled
and written to the recorder's queue by a feeder thread, and its answer read back by another
thread (bench/events.py, docs/benchmarks.md). Notifications that arrive while earlier ones
are with the recorder now wait for them and go over as one message (Nagle's rule: at most
IN_FLIGHT messages out, so an idle server adds no delay, a busy one fills bigger batches).
The recorder applies each in its own savepoint, as if it came alone, and commits them
together; every request still waits for the commit that holds its notification, so a 2xx
still means recorded, and a notification whose batch is lost is answered 503 and retried
by SNS (its events are kept once by SNS message id, so a retry cannot count twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pipeline.channels import ChannelFull
from pipeline.messages import EventsRecordedTogether, Message, RecordEvents, RecordEventsTogether, SesEvent

IN_FLIGHT = 2
MAX_ITEMS = 100  # notifications per message: up to ~150 KB each, so a message stays a few MB at most

Ask = Callable[[Callable[[int], Message]], Awaitable[Message]]


class EventBatcher:
    def __init__(self, ask: Ask) -> None:
        self._ask = ask
        self._waiting: list[tuple[RecordEvents, asyncio.Future[Message]]] = []
        self._out = 0
        self._flush_soon: asyncio.Handle | None = None
        self._item_ids = 0
        self._sending: set[asyncio.Task[None]] = set()

    async def record(self, sns_message_id: str, raw: str, events: tuple[SesEvent, ...]) -> Message:
        """The recorder's answer for one notification (EventsRecorded or Refused), after the
        commit; TimeoutError or ChannelFull when the recorder did not take or confirm it."""
        self._item_ids += 1
        item = RecordEvents(self._item_ids, "ingest", sns_message_id, raw, events)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        self._schedule()
        return await answer

    def _schedule(self) -> None:
        # At the end of this turn of the loop: the notifications read in the same turn go together.
        if self._waiting and self._out < IN_FLIGHT and self._flush_soon is None:
            self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = None
        batch, self._waiting = self._waiting[:MAX_ITEMS], self._waiting[MAX_ITEMS:]
        batch = [(item, answer) for item, answer in batch if not answer.done()]  # its request went away
        if not batch:
            self._schedule()
            return
        self._out += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        self._schedule()

    async def _send(self, batch: list[tuple[RecordEvents, asyncio.Future[Message]]]) -> None:
        items = tuple(item for item, _ in batch)
        try:
            reply = await self._ask(lambda corr_id: RecordEventsTogether(corr_id, "ingest", items))
        except asyncio.CancelledError:  # shutdown: its requests are answered 503
            self._fail(batch, TimeoutError())
            raise
        except (TimeoutError, ChannelFull) as problem:
            self._fail(batch, type(problem)())
            return
        except Exception as problem:  # the replies were failed (the recorder is gone)
            self._fail(batch, problem)
            return
        finally:
            self._out -= 1
            self._schedule()
        answers = reply.answers if isinstance(reply, EventsRecordedTogether) else (reply,) * len(batch)
        for (_, answer), one in zip(batch, answers, strict=True):
            if not answer.done():
                answer.set_result(one)

    @staticmethod
    def _fail(batch: list[tuple[RecordEvents, asyncio.Future[Message]]], problem: BaseException) -> None:
        for _, answer in batch:
            if not answer.done():
                answer.set_exception(problem)
