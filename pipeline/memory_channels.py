"""In-memory channels, so a stage's real `run(ctx)` can run inside a test.

`MemoryInbox` and `MemoryOutbox` are the in-process twins of `channels.Inbox` and
`channels.Outbox`: bounded, in order, a full inbox slows its writer. `MemoryPipeline`
gives every stage of `STAGES` a memory inbox and wires each context's outboxes by
`WRITES_TO`, so a test runs the stages it wants and plays the others by reading and
writing their inboxes. Nothing here starts a thread or a process, and nothing is made
loop-bound before the test's loop runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from config.settings import Settings
from pipeline.channels import INBOX_SIZE, STAGES, ChannelFull, outboxes_of
from pipeline.messages import Message, WakeUp
from pipeline.runtime import StageContext


class MemoryInbox:
    """A stage's inbox in memory (a `StageInbox`); writers put, the stage gets, in order."""

    def __init__(self, capacity: int = INBOX_SIZE) -> None:
        self.capacity = capacity
        self._items: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self._taken = asyncio.Event()

    def put_nowait(self, message: Message) -> bool:
        """Queue `message`; False when `capacity` messages are waiting already."""
        if len(self._items) >= self.capacity:
            return False
        self._items.append(message)
        self._arrived.set()
        return True

    async def put(self, message: Message, timeout_s: float | None = None) -> None:
        """Queue `message`, waiting while the inbox is full; ChannelFull after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self.put_nowait(message):
                    self._taken.clear()
                    await self._taken.wait()
        except TimeoutError:
            raise ChannelFull("a memory inbox is full") from None

    def wake(self) -> None:
        """Make a waiting `get()` return a WakeUp (as the runtime does when it is told to stop)."""
        self._items.append(WakeUp())
        self._arrived.set()

    def get_nowait(self) -> Message | None:
        """The next message if one is waiting, else None."""
        if not self._items:
            return None
        self._taken.set()
        return self._items.popleft()

    async def get(self) -> Message:
        """The next message, waiting as long as it takes."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        self._taken.set()
        return self._items.popleft()

    async def get_within(self, timeout_s: float) -> Message | None:
        """The next message, or None when `timeout_s` passes first."""
        if self._items or timeout_s <= 0:
            return self.get_nowait()
        try:
            async with asyncio.timeout(timeout_s):
                return await self.get()
        except TimeoutError:
            return None

    def pending(self) -> list[Message]:
        """What waits to be read, oldest first, without taking it."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


class MemoryOutbox:
    """A `StageOutbox` that puts into a `MemoryInbox`, and remembers everything it was given."""

    def __init__(self, name: str, target: MemoryInbox) -> None:
        self.name = name
        self.target = target
        self.sent: list[Message] = []

    async def put(self, message: Message, timeout_s: float | None = None) -> None:
        """Put into the reader's inbox, waiting while it is full; ChannelFull after `timeout_s`."""
        await self.target.put(message, timeout_s)
        self.sent.append(message)

    def put_nowait(self, message: Message) -> bool:
        """Put into the reader's inbox without waiting; False when it is full."""
        if not self.target.put_nowait(message):
            return False
        self.sent.append(message)
        return True


class MemoryPipeline:
    """Every stage's inbox in memory; contexts for the stages a test runs in-process."""

    def __init__(self, settings: Settings, capacity: int = INBOX_SIZE) -> None:
        self.settings = settings
        self.inboxes = {name: MemoryInbox(capacity) for name in STAGES}
        self.contexts: dict[str, StageContext] = {}
        self.ready: dict[str, asyncio.Event] = {}

    def context(self, stage: str) -> StageContext:
        """The stage's context, made once: its inbox, and an outbox per `WRITES_TO` edge."""
        if stage not in self.contexts:
            ready = self.ready[stage] = asyncio.Event()
            self.contexts[stage] = StageContext(
                name=stage,
                settings=self.settings,
                inbox=self.inboxes[stage],
                outboxes={name: MemoryOutbox(name, inbox) for name, inbox in outboxes_of(stage, self.inboxes).items()},
                stopping=asyncio.Event(),
                log=logging.getLogger(f"stages.{stage}"),
                ready=ready.set,
            )
        return self.contexts[stage]

    def outbox(self, writer: str, reader: str) -> MemoryOutbox:
        """What `writer`'s context holds for `reader` (KeyError when `WRITES_TO` has no such edge)."""
        outbox = self.context(writer).outboxes[reader]
        assert isinstance(outbox, MemoryOutbox)
        return outbox

    def tell(self, stage: str, *messages: Message) -> None:
        """Put `messages` on the stage's inbox, as another stage would."""
        for message in messages:
            if not self.inboxes[stage].put_nowait(message):
                raise ChannelFull(f"the {stage} inbox is full")

    async def next_for(self, stage: str, timeout_s: float = 5.0) -> Message:
        """The next message on `stage`'s inbox (the test plays that stage); TimeoutError if none comes."""
        message = await self.inboxes[stage].get_within(timeout_s)
        if message is None:
            raise TimeoutError(f"nothing reached the {stage} within {timeout_s}s")
        return message

    def stop(self, stage: str) -> None:
        """What SIGTERM does to a stage: set `stopping`, and wake its inbox."""
        self.context(stage).stopping.set()
        self.inboxes[stage].wake()
