"""The ingest stage: the HTTP API, served on the socket the supervisor owns.

Replies from the recorder arrive on our inbox and complete the waiting handlers. On
stopping, the site stops accepting, in-flight requests finish (their replies still
flow), and then the runtime sends EndOfStream to every stage we write to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from pipeline.channels import PendingReplies
from pipeline.messages import Message
from pipeline.runtime import BootError, StageContext
from stages.ingest.app import make_app

# In-flight requests get this long to finish after a stop; the rest is the drain budget.
REQUEST_DRAIN_S = 2.0


async def run(ctx: StageContext) -> None:
    """Serve HTTP until told to stop."""
    if ctx.listen_socket is None:
        raise BootError("ingest needs the listening socket from the supervisor")
    logging.getLogger("aiohttp.server").addFilter(quiet_malformed_requests)
    replies: PendingReplies[Message] = PendingReplies()
    # aiohttp's keep-alive timer starts when a connection opens and after each answer, and
    # closes the connection if no complete request head has arrived by then: with our
    # bound (not aiohttp's hour), a slow or silent client cannot hold a connection.
    runner = web.AppRunner(
        make_app(ctx, replies),
        handle_signals=False,
        access_log=None,
        keepalive_timeout=ctx.settings.http_idle_timeout_s,
    )
    await runner.setup()
    dispatcher = asyncio.create_task(dispatch_replies(ctx, replies))
    try:
        site = web.SockSite(
            runner, ctx.listen_socket, shutdown_timeout=min(REQUEST_DRAIN_S, ctx.settings.shutdown_timeout_s / 2)
        )
        await site.start()
        ctx.ready()
        await ctx.stopping.wait()
        # Requests still waiting on another stage get a clean 503 ("nothing acknowledged,
        # retry") now, instead of a reset connection when the site shuts down.
        waiting = replies.fail_all(TimeoutError("shutting down"))
        if waiting:
            ctx.log.warning("answered %d waiting request(s) with 503 while stopping", waiting)
    finally:
        await runner.cleanup()
        dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatcher


def quiet_malformed_requests(record: logging.LogRecord) -> bool:
    """A client's malformed HTTP (aiohttp answers it 400) is one INFO line, not an error with a trace."""
    problem = record.exc_info[1] if record.exc_info else None
    if isinstance(problem, HttpProcessingError):
        reason = (problem.message.splitlines() or ["?"])[0]
        record.msg, record.args, record.exc_info = "refused malformed HTTP: %s", (reason,), None
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


async def dispatch_replies(ctx: StageContext, replies: PendingReplies[Message]) -> None:
    """Hand each reply to the handler waiting for it; stale ones are dropped."""
    while True:
        message = await ctx.inbox.get()
        corr_id = getattr(message, "corr_id", None)
        if corr_id is not None:
            replies.resolve(corr_id, message)
