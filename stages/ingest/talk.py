"""How ingest handlers talk to the other stages: ask and wait, or just wake."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from pipeline.channels import ChannelFull
from pipeline.messages import Message, Refused, WorkAdded
from stages.ingest.errors import refused, unavailable
from stages.ingest.keys import CTX, REPLIES

ASK_TIMEOUT_S = 10.0


async def ask(
    request: web.Request, stage: str, build: Callable[[int], Message], timeout_s: float = ASK_TIMEOUT_S
) -> Message:
    """Ask a stage and wait for the reply; 503 (nothing done) when it cannot answer in time,
    and the refusal's answer when it refused (so no handler mistakes a refusal for a reply)."""
    ctx = request.app[CTX]
    return await answer_of(stage, request.app[REPLIES].ask(ctx.outboxes[stage], build, timeout_s))


async def answer_of(stage: str, asked: Awaitable[Message]) -> Message:
    """A stage's answer to a request already on its way (an `ask`, or a batcher's): 503 when
    it was not taken or confirmed in time, the refusal's answer when it refused."""
    try:
        reply = await asked
    except (TimeoutError, ChannelFull):
        raise unavailable(f"the {stage} did not confirm in time; retry") from None
    if isinstance(reply, Refused):
        raise refused(reply)
    return reply


async def wake_scheduler(request: web.Request, due_at_ms: int) -> None:
    try:
        await request.app[CTX].outboxes["scheduler"].put(WorkAdded(due_at_ms), timeout_s=1.0)
    except ChannelFull:
        request.app[CTX].log.warning("could not wake the scheduler; it will find the work on its next wake-up")
