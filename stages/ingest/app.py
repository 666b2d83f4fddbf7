"""The ingest stage's aiohttp application: factory, typed keys, cleanup contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosqlite
from aiohttp import web

from pipeline.channels import PendingReplies
from pipeline.db.schema import read_only_uri
from pipeline.messages import Message
from pipeline.runtime import StageContext
from stages.ingest.errors import error_middleware

CTX = web.AppKey("ctx", StageContext)
REPLIES = web.AppKey("replies", PendingReplies[Message])
DB = web.AppKey("db", aiosqlite.Connection)


def make_app(ctx: StageContext, replies: PendingReplies[Message]) -> web.Application:
    """The API, the webhook and the pixel; nothing loop-bound is made before startup."""
    from stages.ingest.routes import setup_routes

    app = web.Application(client_max_size=ctx.settings.max_request_bytes, middlewares=[error_middleware])
    app[CTX] = ctx
    app[REPLIES] = replies
    app.cleanup_ctx.append(open_database)
    setup_routes(app)
    return app


async def open_database(app: web.Application) -> AsyncIterator[None]:
    """A read-only connection for queries; the recorder alone writes."""
    uri = read_only_uri(app[CTX].settings.database_path)
    async with aiosqlite.connect(uri, uri=True) as db:
        app[DB] = db
        yield
