"""Pixel hits, batched: the image goes out at once, and opens are committed in batches.

Why the answer does not wait for the commit: a mail client never retries a pixel and
gets the image whatever happens, so waiting would buy nothing but latency (with 64
connections it halved the requests served). Pixel hits that arrive within GATHER_S
share one message to the recorder and one commit; each is its raw query string, and
the recorder counts only those this server signed. A graceful stop flushes what is pending;
a crash of ingest can lose the opens of its last few milliseconds. A batch the
recorder's queue refused is retried (it was never enqueued); a batch that timed out
is not, because the recorder may still commit it and an open would count twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pipeline.channels import ChannelFull
from pipeline.messages import Message, OpensRecorded, RecordOpens

GATHER_S = 0.02
MAX_BATCH = 500
MAX_UNCOMMITTED = 100_000  # opens in flight to the recorder; more are dropped (and counted)
RETRIES = 4
RETRY_DELAY_S = 0.1

Ask = Callable[[Callable[[int], Message]], Awaitable[Message]]


class OpenBatcher:
    def __init__(self, ask: Ask, log: logging.Logger) -> None:
        self._ask = ask
        self._log = log
        self._opens: list[tuple[str, int]] = []
        self._agents: list[tuple[str, str]] = []
        self._clicks: list[tuple[int, int, int, str, str]] = []
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._uncommitted = 0
        self.lost = 0

    def add(self, query: str, at_ms: int, agent: tuple[str, str] = ("", "")) -> None:
        """Queue one pixel hit (its raw query, and who fetched it: user agent and address); it is
        sent within GATHER_S (sooner when the batch fills)."""
        self._opens.append((query, at_ms))
        self._agents.append(agent)
        if len(self._opens) >= MAX_BATCH:
            self.flush()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(GATHER_S, self.flush)

    def add_click(self, recipient_id: int, link_index: int, at_ms: int, agent: tuple[str, str] = ("", "")) -> None:
        """Queue one click of a signed link; it travels with the opens of its moment."""
        self._clicks.append((recipient_id, link_index, at_ms, *agent))
        if len(self._opens) + len(self._clicks) >= MAX_BATCH:
            self.flush()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(GATHER_S, self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        opens, self._opens = tuple(self._opens), []
        agents, self._agents = tuple(self._agents), []
        clicks, self._clicks = tuple(self._clicks), []
        count = len(opens) + len(clicks)
        if not count:
            return
        if self._uncommitted + count > MAX_UNCOMMITTED:
            self._give_up(count, "the recorder is too far behind")
            return
        self._uncommitted += count
        task = asyncio.get_running_loop().create_task(self._commit(opens, clicks, agents))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def drain(self, timeout_s: float) -> None:
        """Send what is pending and wait (bounded) for every batch in flight: for a graceful stop."""
        self.flush()
        if self._sending:
            await asyncio.wait(self._sending, timeout=timeout_s)

    async def _commit(
        self,
        opens: tuple[tuple[str, int], ...],
        clicks: tuple[tuple[int, int, int, str, str], ...],
        agents: tuple[tuple[str, str], ...],
    ) -> None:
        try:
            for attempt in range(RETRIES):
                try:
                    reply = await self._ask(lambda corr_id: RecordOpens(corr_id, "ingest", opens, clicks, agents))
                    assert isinstance(reply, OpensRecorded)
                    return
                except ChannelFull:
                    await asyncio.sleep(RETRY_DELAY_S * 2**attempt)
                except TimeoutError:
                    break
            self._give_up(len(opens) + len(clicks), "the recorder did not confirm them")
        finally:
            self._uncommitted -= len(opens) + len(clicks)

    def _give_up(self, count: int, why: str) -> None:
        self.lost += count
        self._log.warning("%d open(s) or click(s) not recorded: %s (%d so far)", count, why, self.lost)
