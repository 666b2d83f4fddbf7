"""What comes back after a send: the SNS webhook, the open pixel, sent counts and quota.

The webhook answers 2xx only after the recorder committed what it carried (so SNS
retries on a 5xx, and a 2xx means recorded), 403 for anything not provably from SNS,
400/413 for malformed bodies. The pixel always answers the image, whatever happens.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

import aiohttp
from aiohttp import web

from pipeline import ses_events
from pipeline.clock import now_ms
from pipeline.messages import EventsRecorded, GetQuota, QuotaReport
from stages.ingest.bodies import read_capped
from stages.ingest.errors import ApiError
from stages.ingest.keys import CTX, DB, EVENTS, HTTP, OPENS, SNS_KEYS
from stages.ingest.params import HOURS, whole_number
from stages.ingest.sns import check_subscribe_url, parse_envelope, verify
from stages.ingest.talk import answer_of, ask

MAX_SNS_BODY_BYTES: Final = 256 * 1024
MAX_PIXEL_QUERY_CHARS: Final = 200  # ours are about 60; longer ones are not ours
QUOTA_TIMEOUT_S: Final = 2.0


def make_png() -> bytes:
    """A 1x1 transparent PNG, built by the spec (so every decoder accepts it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    pixels = zlib.compress(b"\x00\x00\x00\x00\x00")  # filter byte + one transparent pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


PIXEL: Final = make_png()
PIXEL_HEADERS: Final = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}


async def sns_results(request: web.Request) -> web.Response:
    """POST /v1/events/results: SES events, subscription confirmations, from SNS."""
    ctx = request.app[CTX]
    body = await read_capped(request, MAX_SNS_BODY_BYTES, "an SNS message")
    envelope = parse_envelope(body, request.headers.get("x-amz-sns-message-type"))
    await verify(envelope, ctx.settings.sns, request.app[SNS_KEYS])
    kind = envelope["Type"]
    if kind == "SubscriptionConfirmation":
        return await confirm_subscription(request, envelope)
    if kind == "UnsubscribeConfirmation":
        ctx.log.warning("SNS says topic %s was unsubscribed from this endpoint", envelope["TopicArn"])
        return web.json_response({"status": "noted"})
    sns_id, message = envelope["MessageId"], envelope["Message"]
    try:
        events = ses_events.parse(sns_id, message)
    except ses_events.InvalidEvent as problem:
        raise ApiError(400, "invalid_event", str(problem), "Message") from None
    if events is None:
        ctx.log.info("SNS notification %s is not an SES event; ignored", sns_id)
        return web.json_response({"status": "ignored"})
    reply = await answer_of("recorder", request.app[EVENTS].record(sns_id, message, tuple(events)))
    assert isinstance(reply, EventsRecorded)
    return web.json_response({"status": "recorded", "recorded": reply.recorded, "matched": reply.matched})


async def confirm_subscription(request: web.Request, envelope: dict[str, Any]) -> web.Response:
    """Confirm by fetching SubscribeURL: signed, allowed topic, SNS host, no redirects."""
    ctx = request.app[CTX]
    if not ctx.settings.sns.auto_confirm:
        ctx.log.warning("subscription to %s not confirmed (SNS_AUTO_CONFIRM=false)", envelope["TopicArn"])
        return web.json_response({"status": "not confirmed"})
    url = check_subscribe_url(envelope, ctx.settings.sns)
    try:
        async with request.app[HTTP].get(url, allow_redirects=False) as response:
            await response.read()
            confirmed = response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        confirmed = False
    if not confirmed:
        # 503: SNS retries the confirmation message.
        raise ApiError(503, "unavailable", "the subscription could not be confirmed with SNS; retry")
    ctx.log.info("confirmed the SNS subscription to %s", envelope["TopicArn"])
    return web.json_response({"status": "confirmed"})


async def open_pixel(request: web.Request) -> web.Response:
    """GET /v1/events/open: the 1x1 image, always; an open counts only with a valid signature."""
    if request.method == "GET":
        try:
            record_open(request)
        except Exception:  # a mail client must never see an error page
            request.app[CTX].log.exception("could not record an open")
    return web.Response(body=PIXEL, content_type="image/png", headers=PIXEL_HEADERS)


def record_open(request: web.Request) -> None:
    """Batch the raw query of anything that may be a signed link; the recorder checks the
    signature (see opens.py for when it commits, and tracking.signed_recipient).

    Nothing is parsed here: on the busiest route, in the one process that serves HTTP,
    the raw target is cheaper than yarl and a MultiDict, and the HMAC is not ours to pay.
    """
    query = request.raw_path.partition("?")[2]
    if "sig=" in query and len(query) <= MAX_PIXEL_QUERY_CHARS:
        request.app[OPENS].add(query, now_ms(), agent_of(request))


def agent_of(request: web.Request) -> tuple[str, str]:
    """Who fetched it: the User-Agent and the client's address (the first X-Forwarded-For
    address when the connection comes from this machine, i.e. a local reverse proxy)."""
    address = request.remote or ""
    if address in ("127.0.0.1", "::1") and (forwarded := request.headers.get("X-Forwarded-For")):
        address = forwarded.split(",", 1)[0].strip()
    return request.headers.get("User-Agent", "")[:MAX_AGENT_CHARS], address[:MAX_AGENT_CHARS]


MAX_AGENT_CHARS = 512


async def sent_counts(request: web.Request) -> web.Response:
    """GET /v1/events/counts/sent?hours=24: what this server sent, and the SES quota."""
    hours = whole_number(request, HOURS)
    since_ms = now_ms() - hours * 3_600_000
    row = await request.app[DB].fetchone("SELECT COUNT(*) FROM recipients WHERE sent_at_ms >= ?", (since_ms,))
    answer: dict[str, Any] = {"count": row[0] if row else 0, "hours": hours}
    answer.update(await quota(request))
    return web.json_response(answer)


async def quota(request: web.Request, with_rate: bool = False) -> dict[str, Any]:
    """SES's quota as the sender last read it; `with_rate`: also the sender's own rate."""
    try:
        report = await ask(request, "sender", lambda c: GetQuota(c, "ingest"), timeout_s=QUOTA_TIMEOUT_S)
    except ApiError:
        return {"quota": None, "quota_error": "the sender did not answer"}
    assert isinstance(report, QuotaReport)
    sending: dict[str, Any] = {}
    if with_rate and report.rate is not None:
        now, ceiling = report.rate
        sending = {"sending": {"rate_limit_per_second": round(now, 3), "max_per_second": ceiling}}
    if report.quota is None:
        return {"quota": None, "quota_error": report.error, **sending}
    max_24, rate, sent_24 = report.quota
    remaining = None if max_24 < 0 else max(0.0, max_24 - sent_24)
    answer: dict[str, Any] = {
        "max_24_hour_send": max_24,
        "max_send_rate": rate,
        "sent_last_24_hours": sent_24,
        "remaining": remaining,
    }
    if report.account is not None:
        status, enabled, production = report.account
        answer |= {"enforcement_status": status, "sending_enabled": enabled, "production_access_enabled": production}
    return {"quota": answer, **sending}
