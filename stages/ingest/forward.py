"""With PostgreSQL, a hold that reaches a node that does not send is carried to the one that does.

A cancel, a pause or an unsubscribe must reach the sending node's sender: only it knows
which calls may already be at SES (docs/architecture.md, the hold protocol). A node that
stands by answers them with `not_the_sending_node`; this wrapper then sends the same
request (method, path, body, credentials) to the sending node's NODE_URL, found in the
database, and answers with what it answered. A forwarded request is never forwarded
again: while no node sends (a failover, at most FAILOVER_S) the answer is 503 with
Retry-After, and nothing was done.
"""

from __future__ import annotations

import functools
import math
from typing import Final

import aiohttp
from aiohttp import web

from pipeline.db.leadership import SENDER_LOCK, SENDING_NODE_QUERY, node_of
from pipeline.messages import Refusal
from stages.ingest.errors import ApiError, Handler, unavailable
from stages.ingest.keys import CTX, DB, HTTP

FORWARDED_BY: Final = "X-Ses-Sender-Forwarded-By"
CARRIED: Final = ("Authorization", "X-API-KEY", "Content-Type", "Accept")
ANSWERED: Final = ("Content-Type", "Retry-After")
FORWARD_TIMEOUT_S: Final = 15.0


def to_sending_node(handler: Handler) -> Handler:
    """`handler`, carried to the sending node when this node's sender says it does not send."""

    @functools.wraps(handler)
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as problem:
            if problem.code != Refusal.NOT_SENDING.value:
                raise
            return await forward(request)

    return handle


async def sending_node_url(request: web.Request) -> str | None:
    """The NODE_URL of the node holding the sender lock (None: none does, or it is this one)."""
    row = await request.app[DB].fetchone(SENDING_NODE_QUERY, (SENDER_LOCK,))
    node = node_of(row[0] if row else None)
    if node is None or node == request.app[CTX].settings.node_name:
        return None
    found = await request.app[DB].fetchone("SELECT url FROM nodes WHERE name = ?", (node,))
    return None if found is None else str(found[0])


async def forward(request: web.Request) -> web.StreamResponse:
    settings = request.app[CTX].settings
    retry_after = math.ceil(settings.failover_s)
    if FORWARDED_BY in request.headers:
        raise unavailable("the node this was forwarded to does not send either (a failover?); retry", retry_after)
    url = await sending_node_url(request)
    if url is None:
        raise unavailable("no node sends right now (a standby takes over within FAILOVER_S); retry", retry_after)
    headers = {name: request.headers[name] for name in CARRIED if name in request.headers}
    headers[FORWARDED_BY] = settings.node_name
    try:
        async with request.app[HTTP].request(
            request.method,
            url + request.path_qs,
            data=await request.read(),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            kept = {name: answer.headers[name] for name in ANSWERED if name in answer.headers}
            return web.Response(body=body, status=answer.status, headers=kept)
    except (aiohttp.ClientError, TimeoutError) as problem:
        request.app[CTX].log.warning("could not reach the sending node: %s", type(problem).__name__)
        raise unavailable("the sending node did not answer; retry", retry_after) from None
