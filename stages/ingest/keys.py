"""The typed keys of the ingest app's state, in a module of their own.

Handlers import these, and `app.py` imports the handlers' routes: keeping the keys here
is what lets both go one way, with no import cycle through the app factory.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from pipeline.channels import PendingReplies
from pipeline.db.readers import Reader
from pipeline.messages import Message
from pipeline.runtime import StageContext
from stages.ingest.event_batches import EventBatcher
from stages.ingest.opens import OpenBatcher
from stages.ingest.ratelimit import ClientLimiter
from stages.ingest.sns import SigningKeys

CTX = web.AppKey("ctx", StageContext)
REPLIES = web.AppKey("replies", PendingReplies[Message])
DB = web.AppKey("db", Reader)
SNS_KEYS = web.AppKey("sns_keys", SigningKeys)
HTTP = web.AppKey("http", aiohttp.ClientSession)
OPENS = web.AppKey("opens", OpenBatcher)
EVENTS = web.AppKey("events", EventBatcher)
LIMITER: web.AppKey[ClientLimiter | None] = web.AppKey("limiter")
# The installation key, for reading unsubscribe links (the recorder checks the pixel's).
LINK_KEY = web.AppKey("link_key", bytes)
