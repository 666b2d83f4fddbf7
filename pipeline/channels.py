"""Bounded queues between stages, and their bridge into asyncio.

Only the supervisor creates queues (`create_inboxes`); `WRITES_TO` is the one table of
who writes to whom. A stage sees its channels only as `StageInbox` and `StageOutbox`,
so a test can run it on in-memory ones (`pipeline/memory_channels.py`). Each stage
reads its inbox through one thread blocked in `get()`; that thread holds at most
`LOCAL_BUFFER` unread items, so a slow stage slows its producers instead of growing
memory. On exit the runtime wakes and joins the thread, so the queue's read lock is
released (see STYLE.md, "Queues can be poisoned").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

from pipeline.messages import Message, WakeUp

log = logging.getLogger(__name__)

# Start order; shutdown is driven by data (EndOfStream), not by order.
STAGES: Final = ("recorder", "sender", "scheduler", "ingest")
# Every edge is used (tests/unit/test_topology.py checks the code against this table):
WRITES_TO: Final[Mapping[str, tuple[str, ...]]] = {
    # the recorder: every write; the scheduler: WorkAdded; the sender: HoldTopic, GetQuota
    "ingest": ("recorder", "scheduler", "sender"),
    # the recorder: ClaimDue; the sender: Deliver
    "scheduler": ("recorder", "sender"),
    # the recorder: RecordOutcomes, HoldTopicRows; the scheduler: Demand; ingest: QuotaReport
    "sender": ("recorder", "scheduler", "ingest"),
    # each answer to its request's reply_to (and TopicHeld to the sender too)
    "recorder": ("ingest", "scheduler", "sender"),
}
# The stages that write to the recorder. The recorder serves until each has sent
# EndOfStream; each sends it on every outbox when its `run(ctx)` ends (pipeline.runtime).
PRODUCERS: Final = frozenset(name for name, targets in WRITES_TO.items() if "recorder" in targets)
INBOX_SIZE: Final = 1024
LOCAL_BUFFER: Final = 256
PUT_SLICE_S: Final = 0.5

if TYPE_CHECKING:
    AnyQueue = Queue[Any]  # what multiprocessing.Queue() returns
else:
    AnyQueue = Queue


Channel = TypeVar("Channel")


class ChannelFull(Exception):
    """The receiving stage did not take the message in time."""


class StageInbox(Protocol):
    """What a stage reads: its messages in arrival order. A `WakeUp` means "check `stopping`"."""

    async def get(self) -> Message:
        """The next message, waiting as long as it takes."""
        ...

    async def get_within(self, timeout_s: float) -> Message | None:
        """The next message, or None when `timeout_s` passes first."""
        ...

    def get_nowait(self) -> Message | None:
        """The next message if one is here already (group commits take what is queued)."""
        ...


class StageOutbox(Protocol):
    """Another stage's inbox, as a stage writes to it; named after its reader."""

    @property
    def name(self) -> str: ...

    async def put(self, message: Message, timeout_s: float | None = None) -> None:
        """Hand `message` over, waiting while the reader is full; ChannelFull after `timeout_s`."""
        ...

    def put_nowait(self, message: Message) -> bool:
        """Hand over without waiting; False when the reader is full."""
        ...


def create_inboxes(ctx: SpawnContext) -> dict[str, AnyQueue]:
    """Fresh bounded queues, one inbox per stage."""
    return {name: ctx.Queue(INBOX_SIZE) for name in STAGES}


def outboxes_of(stage: str, inboxes: Mapping[str, Channel]) -> dict[str, Channel]:
    """The channels `stage` may write to, by the name of their reader."""
    return {target: inboxes[target] for target in WRITES_TO[stage]}


def release_queues(queues: Iterable[AnyQueue]) -> None:
    """Drop queues whose readers are gone without waiting on their feeder threads."""
    for q in queues:
        q.cancel_join_thread()
        q.close()


class Inbox:
    """A stage's inbox (a `StageInbox`) over a multiprocessing queue, fed by one reader thread."""

    def __init__(self, source: AnyQueue, stage: str) -> None:
        self._source = source
        self._stage = stage
        self._items: asyncio.Queue[Message] = asyncio.Queue()
        self._slots = threading.Semaphore(LOCAL_BUFFER)
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._read, args=(loop,), name=f"{self._stage}-inbox", daemon=True)
        self._thread.start()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._closing.is_set():
            self._slots.acquire()
            try:
                item = self._source.get()
            except (EOFError, OSError):
                return
            except Exception:  # an unpicklable or foreign object: drop it, keep reading
                log.exception("%s: dropped an unreadable message", self._stage)
                self._slots.release()
                continue
            if self._closing.is_set():
                return
            if not isinstance(item, Message):
                log.error("%s: dropped a foreign object of type %s", self._stage, type(item).__name__)
                self._slots.release()
                continue
            if isinstance(item, WakeUp):
                self._slots.release()
                continue
            loop.call_soon_threadsafe(self._items.put_nowait, item)

    def wake(self) -> None:
        """Make a pending `get()` return a local WakeUp (the stage then checks `stopping`)."""
        self._items.put_nowait(WakeUp())

    async def get(self) -> Message:
        return self._taken(await self._items.get())

    def get_nowait(self) -> Message | None:
        try:
            return self._taken(self._items.get_nowait())
        except asyncio.QueueEmpty:
            return None

    def _taken(self, item: Message) -> Message:
        # Local WakeUps took no slot; everything the reader handed over did.
        if not isinstance(item, WakeUp):
            self._slots.release()
        return item

    async def get_within(self, timeout_s: float) -> Message | None:
        """The next message, or None when `timeout_s` passes first."""
        try:
            return await asyncio.wait_for(self.get(), timeout=max(timeout_s, 0))
        except TimeoutError:
            return None

    def close(self, timeout_s: float = 2.0) -> bool:
        """Wake the reader thread and join it; True when it left `get()` cleanly."""
        if self._thread is None:
            return True
        self._closing.set()
        self._slots.release()
        with contextlib.suppress(queue.Full):
            self._source.put(WakeUp(), timeout=timeout_s)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


class Outbox:
    """A `StageOutbox` over the queue another stage reads; `put` waits (off the loop) while it is full."""

    def __init__(self, target: AnyQueue, name: str) -> None:
        self._target = target
        self.name = name

    async def put(self, message: Message, timeout_s: float | None = None) -> None:
        """Hand `message` over; raise ChannelFull when `timeout_s` passes first."""
        try:
            self._target.put_nowait(message)
            return
        except queue.Full:
            pass
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            slice_s = PUT_SLICE_S if deadline is None else min(PUT_SLICE_S, deadline - loop.time())
            if slice_s <= 0:
                raise ChannelFull(f"the {self.name} stage is not taking messages")
            try:
                await asyncio.to_thread(self._target.put, message, True, slice_s)
                return
            except queue.Full:
                continue

    def put_nowait(self, message: Message) -> bool:
        """Hand over without waiting; False when the queue is full."""
        try:
            self._target.put_nowait(message)
            return True
        except queue.Full:
            return False


R = TypeVar("R", bound=Message)


class PendingReplies(Generic[R]):
    """Correlation ids and the futures waiting on them."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[R]] = {}

    def open(self) -> tuple[int, asyncio.Future[R]]:
        corr_id = next(self._ids)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting[corr_id] = future
        return corr_id, future

    def resolve(self, corr_id: int, reply: R) -> bool:
        """Complete the matching request; False for a stale or unknown id."""
        future = self._waiting.pop(corr_id, None)
        if future is None or future.done():
            return False
        future.set_result(reply)
        return True

    async def ask(self, outbox: StageOutbox, build: Callable[[int], Message], timeout_s: float) -> R:
        """Send the request `build(corr_id)` and wait for its reply; TimeoutError or ChannelFull."""
        corr_id, future = self.open()
        try:
            async with asyncio.timeout(timeout_s):
                await outbox.put(build(corr_id), timeout_s=timeout_s)
                return await future
        finally:
            self._waiting.pop(corr_id, None)

    def fail_all(self, error: Exception) -> int:
        """Give every waiting request `error` instead of a reply (shutdown); how many there were."""
        failed = 0
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
                failed += 1
        self._waiting.clear()
        return failed

    def __len__(self) -> int:
        return len(self._waiting)


def describe(message: Any) -> str:
    """A short name for logs: never the payload, which can hold addresses."""
    return type(message).__name__
