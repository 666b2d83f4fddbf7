"""The sender: *how fast*. The rate limiter, the SES calls, the retry policy.

It opens the backend once (SES v2 or the outbox), settles the rate (MAX_SEND_PER_SECOND,
else SES's own MaxSendRate, else SES's starting rate), watches the 24-hour quota, and
runs the Sender until told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from config.settings import SES_STARTING_RATE_PER_S, Settings
from pipeline import metrics
from pipeline.db.blocking_pg import BlockingPostgres
from pipeline.db.dialect import STORE_ERRORS, Conn
from pipeline.db.leadership import SenderLock
from pipeline.db.schema import open_reader, tracking_key
from pipeline.limiter import RateLimiter
from pipeline.mail import Tracking, Unsubscribe
from pipeline.runtime import BootError, StageContext
from pipeline.ses import MailBackend, open_backend
from pipeline.tracking import pixel_tag
from pipeline.unsubscribe import signed_headers, signed_url, token
from stages.sender.contents import ContentCache
from stages.sender.sending import Sender
from stages.sender.standby import stand_by, watch_lock

MIN_IN_FLIGHT = 8
# Enough calls in flight to hold the rate with up to this much SES latency.
LATENCY_HEADROOM_S = 1.0


def in_flight_limit(rate_per_s: float, cap: int) -> int:
    """rate x latency headroom, at least a few, at most the configured cap."""
    return max(1, min(cap, max(MIN_IN_FLIGHT, math.ceil(rate_per_s * LATENCY_HEADROOM_S))))


async def run(ctx: StageContext) -> None:
    """Send what the scheduler delivers until told to stop."""
    settings = ctx.settings
    reader = open_contents_reader(settings)
    try:
        key = tracking_key(reader)
    except (*STORE_ERRORS, LookupError) as problem:
        reader.close()
        raise BootError(f"cannot read the tracking key: {problem}") from problem
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(reader.close)
        backend = await stack.enter_async_context(open_backend(settings.ses, settings.ses.max_in_flight))
        rate = await settle_rate(ctx, backend)
        limit = in_flight_limit(rate, settings.ses.max_in_flight)
        ctx.log.info("sending through %s at %.1f/s, %d in flight at most", backend.name, rate, limit)
        limiter = RateLimiter(rate)
        sender = Sender(
            ctx=ctx,
            backend=backend,
            contents=ContentCache(reader, settings.lists.footer),
            limiter=limiter,
            pixel=lambda recipient_id: pixel_tag(settings.server_url, key, recipient_id),
            unsubscribe=lambda recipient_id, list_id: unsubscribe_link(settings, key, recipient_id, list_id),
            tracking=Tracking(settings.server_url, key),
            in_flight_limit=limit,
        )
        backend.admission = sender.admit
        watcher = asyncio.create_task(watch_quota(ctx, backend, sender))
        stack.callback(watcher.cancel)
        ctx.ready()
        if settings.postgres_url is not None:
            lock = SenderLock(settings.postgres_url, settings.node_name, settings.failover_s)
            stack.push_async_callback(lock.release)
            kept = await stand_by(ctx, lock, lambda reason: setattr(sender, "guard_hold", reason))
            if kept is None:
                return
            holding = asyncio.create_task(watch_lock(ctx, lock))
            stack.callback(holding.cancel)
            for message in kept:
                sender.on_message(message)
        await sender.serve()


def open_contents_reader(settings: Settings) -> Conn:
    """Where the sender reads message contents: a read-only SQLite connection, or PostgreSQL."""
    try:
        if settings.postgres_url is not None:
            return BlockingPostgres(settings.postgres_url, f"ses-sender contents {settings.node_name}")
        return open_reader(settings.database_path)
    except (*STORE_ERRORS, OSError) as problem:  # never the URL: it may hold a password
        raise BootError(f"cannot read the database: {type(problem).__name__}: {problem}") from problem


def unsubscribe_link(settings: Settings, key: bytes, recipient_id: int, list_id: str | None) -> Unsubscribe:
    """The recipient's one-click link (signed with the installation key) and its list headers."""
    signed = token(key, recipient_id, list_id)
    headers = signed_headers(settings.server_url, signed, list_id, settings.lists.mailto)
    return Unsubscribe(signed_url(settings.server_url, signed), tuple(headers))


async def settle_rate(ctx: StageContext, backend: MailBackend) -> float:
    """MAX_SEND_PER_SECOND when set, else SES's MaxSendRate, else SES's starting rate.

    The quota is read either way: the first call also pays the client's lazy set-up
    (credentials, endpoint rules), which would otherwise stall the first sends.
    """
    configured = ctx.settings.ses.max_send_per_s
    try:
        quota = await backend.quota()
    except Exception as problem:  # SES unreachable at start: start carefully, AIMD adjusts
        ctx.log.warning("could not read the SES quota (%s)", type(problem).__name__)
        quota = None
    if quota is not None:
        ctx.log.info(
            "SES quota: %.0f/s, %.0f per 24 h, %.0f used",
            quota.max_send_rate,
            quota.max_24_hour_send,
            quota.sent_last_24_hours,
        )
    if configured is not None:
        return configured
    if quota is None or quota.max_send_rate <= 0:
        return SES_STARTING_RATE_PER_S
    return quota.max_send_rate


async def watch_quota(ctx: StageContext, backend: MailBackend, sender: Sender) -> None:
    """Keep the sender's view of the 24-hour quota fresh (it holds the backlog at zero)."""
    if backend.name == "outbox":
        sender.quota_error = "the outbox backend has no SES quota"
        return
    while True:
        try:
            quota = await backend.quota()
        except Exception as problem:  # keep the last budget; SES errors pause sending anyway
            ctx.log.debug("quota check failed: %s", type(problem).__name__)
            sender.last_quota, sender.quota_error = None, f"SES did not answer GetAccount ({type(problem).__name__})"
        else:
            if quota is not None:
                sender.set_quota_remaining(quota.remaining)
                metrics.QUOTA_USED.set(quota.sent_last_24_hours)
                metrics.QUOTA_LEFT.set(-1 if quota.remaining == float("inf") else quota.remaining)
                sender.last_quota = (quota.max_24_hour_send, quota.max_send_rate, quota.sent_last_24_hours)
                sender.last_account = (quota.enforcement_status, quota.sending_enabled, quota.production_access)
        await asyncio.sleep(ctx.settings.ses.quota_refresh_s)
