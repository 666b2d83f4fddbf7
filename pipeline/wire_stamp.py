"""When a request's bytes are written: aiohttp's chunk-sent trace, for the rate limiter.

The limiter admits a call at botocore's `before-send`, but the request can wait after that
for a connection (a new TLS handshake at the start of a campaign or when more run at
once). SES counts a send when it arrives, so the limiter's window for it should start
when it is written, not when it was admitted: a request held back 30 ms and one sent on
time would otherwise land in the same second. The sender sets WIRE_STAMP to a callback
before each request; the trace calls it once, just before the body goes to the socket.
Not the headers-sent trace: aiohttp calls that before it has written anything, and
buffers the headers to go out with the body, which on Python 3.11 a separate task
writes a turn of the loop later (measured: 1,000 SendEmail calls a second went to 1.039
of the rate in a rolling second when stamped at the headers, 1.000 at the body). That
task runs in a copy of the request's context, so it sees the callback too.

aiobotocore builds its aiohttp session itself; `http_session_cls` (an AioConfig option) is
how a caller adds to it. The trace is appended to the session aiobotocore made, so
everything else about that session (timeouts, the connector, SSL) stays as aiobotocore
sets it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiobotocore.httpsession import AIOHTTPSession

WIRE_STAMP: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("wire_stamp", default=None)


async def _body_written(_session: aiohttp.ClientSession, _ctx: SimpleNamespace, _params: Any) -> None:
    if (stamp := WIRE_STAMP.get()) is not None:
        WIRE_STAMP.set(None)  # once per request: a later chunk or request sees it spent
        stamp()


def _trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_body_written)
    trace.freeze()
    return trace


WIRE_TRACE = _trace()


class StampedHttpSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore ships no types
    """aiobotocore's HTTP session, with the chunk-sent trace on every aiohttp session it makes."""

    async def _get_session(self, proxy_url: Any) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession = await super()._get_session(proxy_url)
        if WIRE_TRACE not in session.trace_configs:
            session.trace_configs.append(WIRE_TRACE)
        return session
