"""The ingest stage's aiohttp application: the factory and its cleanup contexts (keys: keys.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from pipeline.channels import PendingReplies
from pipeline.db.readers import open_reader
from pipeline.db.schema import TRACKING_KEY
from pipeline.messages import Message
from pipeline.runtime import StageContext
from stages.ingest.event_batches import EventBatcher
from stages.ingest.keys import CTX, DB, EVENTS, HTTP, LIMITER, LINK_KEY, OPENS, REPLIES, SNS_KEYS
from stages.ingest.opens import OpenBatcher
from stages.ingest.ratelimit import make_limiter
from stages.ingest.routes import setup_routes
from stages.ingest.sns import SigningKeys
from stages.ingest.talk import ASK_TIMEOUT_S

PIXEL_RECORD_TIMEOUT_S = 2.0
OPENS_DRAIN_S = 1.0


def make_app(ctx: StageContext, replies: PendingReplies[Message]) -> web.Application:
    """The API, the webhook and the pixel; nothing loop-bound is made before startup."""
    app = web.Application(
        client_max_size=ctx.settings.max_request_bytes,
    )
    app[LIMITER] = make_limiter(ctx.settings.api_rate_per_s, ctx.settings.api_rate_burst)
    app[CTX] = ctx
    app[REPLIES] = replies
    app[OPENS] = OpenBatcher(
        lambda build: replies.ask(ctx.outboxes["recorder"], build, PIXEL_RECORD_TIMEOUT_S), ctx.log
    )
    app[EVENTS] = EventBatcher(lambda build: replies.ask(ctx.outboxes["recorder"], build, ASK_TIMEOUT_S))
    app.on_cleanup.append(drain_opens)
    app.cleanup_ctx.append(open_database)
    app.cleanup_ctx.append(open_http_client)
    setup_routes(app)
    return app


async def drain_opens(app: web.Application) -> None:
    """On a graceful stop, after the last request: commit the opens still batched."""
    await app[OPENS].drain(OPENS_DRAIN_S)


async def open_database(app: web.Application) -> AsyncIterator[None]:
    """A read-only connection for queries; the recorder alone writes."""
    settings = app[CTX].settings
    async with open_reader(settings.database_path, settings.postgres_url) as db:
        app[DB] = db
        row = await db.fetchone("SELECT value FROM server_secrets WHERE name = ?", (TRACKING_KEY,))
        if row is None:
            raise LookupError("the database has no installation key; has the recorder migrated it?")
        app[LINK_KEY] = bytes.fromhex(row[0])
        yield


async def open_http_client(app: web.Application) -> AsyncIterator[None]:
    """Outbound HTTP for SNS only: signing certificates and subscription confirmations."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        app[HTTP] = session
        app[SNS_KEYS] = SigningKeys(session)
        yield
