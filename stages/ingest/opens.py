"""Pixel hits, batched: requests that arrive within a few ms share one message and commit.

Each request still waits until the recorder has committed its open, so a 2xx from the
pixel means the open is recorded, but the queue hop and the commit are paid once per
batch instead of once per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pipeline.messages import Message, OpensRecorded, RecordOpens

GATHER_S = 0.002
MAX_BATCH = 500

Ask = Callable[[Callable[[int], Message]], Awaitable[Message]]


class OpenBatcher:
    def __init__(self, ask: Ask) -> None:
        self._ask = ask
        self._opens: list[tuple[int, int]] = []
        self._done: asyncio.Future[None] | None = None
        self._flush: asyncio.TimerHandle | None = None

    async def record(self, recipient_id: int, at_ms: int) -> None:
        """Queue one open and wait for the commit of its batch (raises what the ask raised)."""
        loop = asyncio.get_running_loop()
        if self._done is None:
            self._done = loop.create_future()
            self._flush = loop.call_later(GATHER_S, self._send)
        done = self._done
        self._opens.append((recipient_id, at_ms))
        if len(self._opens) >= MAX_BATCH:
            self._send()
        await asyncio.shield(done)

    def _send(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        opens, done = tuple(self._opens), self._done
        self._opens, self._done, self._flush = [], None, None
        if done is not None:
            task = asyncio.get_running_loop().create_task(self._commit(opens))
            task.add_done_callback(lambda t: _settle(done, t))

    async def _commit(self, opens: tuple[tuple[int, int], ...]) -> None:
        reply = await self._ask(lambda corr_id: RecordOpens(corr_id, "ingest", opens))
        assert isinstance(reply, OpensRecorded)


def _settle(done: asyncio.Future[None], task: asyncio.Task[None]) -> None:
    if done.done():
        return
    if task.exception() is not None:
        done.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        done.set_result(None)
