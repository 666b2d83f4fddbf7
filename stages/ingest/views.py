"""HTTP handlers. Validation lives in campaigns.py; writes go to the recorder."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from config.settings import SnsSettings
from pipeline import metrics
from pipeline.channels import ChannelFull
from pipeline.db.leadership import SENDER_LOCK, SENDING_NODE_QUERY, node_of
from pipeline.db.queries import GUARD_ACCOUNT_REASON, recent_topics, topic_counts
from pipeline.db.readers import Reader
from pipeline.db.status import Status
from pipeline.messages import (
    HoldTopic,
    Message,
    Ping,
    ResumeTopic,
    Stored,
    StoreMessages,
    TopicHeld,
    TopicResumed,
)
from stages.ingest.auth import CLIENT
from stages.ingest.bodies import read_json_body
from stages.ingest.campaigns import Campaign, iso_utc, parse_campaign
from stages.ingest.errors import ApiError
from stages.ingest.keys import CTX, DB, REPLIES
from stages.ingest.params import TOPICS_LIMIT, TOPICS_OFFSET, whole_number
from stages.ingest.schemas import MAX_TOPIC_CHARS, NO_CONTROL_CHARACTERS, conforms
from stages.ingest.talk import ask, wake_scheduler

READY_TIMEOUT_S = 1.0
MAX_IDEMPOTENCY_KEY_CHARS = 255


async def health(request: web.Request) -> web.Response:
    """Liveness: the ingest process answers."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 when every stage runs, the database reads and the recorder answers; else 503."""
    ctx = request.app[CTX]
    stages = ctx.states.snapshot() if ctx.states is not None else {}
    problems = [f"{name} is {state}" for name, state in stages.items() if state != "running" and name != "ingest"]
    try:
        await request.app[DB].fetchall("SELECT 1 FROM recipients LIMIT 1")
        database = "ok"
    except Exception as problem:
        database = f"error: {type(problem).__name__}"
        problems.append("the database does not answer")
    try:
        await request.app[REPLIES].ask(ctx.outboxes["recorder"], lambda c: Ping(c, "ingest"), READY_TIMEOUT_S)
    except (TimeoutError, ChannelFull):
        problems.append("the recorder does not answer")
    body: dict[str, Any] = {
        "status": "ready" if not problems else "not ready",
        "stages": {**stages, "ingest": "running"},
        "database": database,
        "sender": await sending_node_of(request),
        "db": "connected" if database == "ok" else "disconnected",  # the original server's field
        "ses_events": ses_events_state(ctx.settings.sns),
    }
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=200 if not problems else 503)


async def sending_node_of(request: web.Request) -> dict[str, Any]:
    """Which node sends: with SQLite this one; with PostgreSQL the holder of the sender lock
    (None while none holds it: a standby takes over within FAILOVER_S)."""
    settings = request.app[CTX].settings
    if settings.postgres_url is None:
        return {"node": settings.node_name, "this_node": True}
    try:
        row = await request.app[DB].fetchone(SENDING_NODE_QUERY, (SENDER_LOCK,))
    except Exception as problem:
        return {"node": None, "this_node": False, "error": type(problem).__name__}
    node = node_of(row[0] if row else None)
    return {"node": node, "this_node": node == settings.node_name}


def ses_events_state(sns: SnsSettings) -> str:
    """Whether the SNS webhook takes SES events, in the words an operator needs."""
    if sns.allow_any_topic:
        return "on, from any SNS topic (SNS_ALLOW_ANY_TOPIC=true)"
    if not sns.topic_arns:
        return "off until SNS_TOPIC_ARNS is set"
    return f"on, from {len(sns.topic_arns)} topic(s) in SNS_TOPIC_ARNS"


async def post_messages(request: web.Request) -> web.Response:
    """Validate the whole campaign, have the recorder commit it, then answer."""
    started_ns = time.monotonic_ns()
    ctx = request.app[CTX]
    body = await read_json_body(request, ctx.settings.max_request_bytes)
    key = idempotency_key(request)
    if key is not None:  # one caller's key never replays another caller's answer
        key = f"{request[CLIENT]}\n{key}"
    campaign = parse_campaign(body, ctx.settings, datetime.now(UTC))
    store = StoreMessages(
        corr_id=0,
        reply_to="ingest",
        messages=campaign.messages,
        due_at_ms=campaign.due_at_ms,
        facts=campaign.facts(),
        idempotency_key=key,
        body_digest=hashlib.sha256(body).hexdigest() if key else None,
        received_ns=started_ns,
    )
    reply = await ask_recorder(request, store)
    assert isinstance(reply, Stored)
    if not reply.replayed:
        count_posted(campaign, reply)
        if campaign.stored_count:
            await wake_scheduler(request, campaign.due_at_ms)
    metrics.POST_LATENCY.observe((time.monotonic_ns() - started_ns) / 1e9)
    # The recorder's answer as it keeps it: a replay of the same key gets the same bytes.
    return web.Response(text=reply.answer, content_type="application/json")


def count_posted(campaign: Campaign, stored: Stored) -> None:
    """What became of each posted recipient, once committed (a replay was counted the first time)."""
    for outcome, n in (
        ("accepted", stored.stored),
        ("rejected", len(campaign.rejected)),
        ("duplicate", campaign.duplicates),
        ("suppressed", stored.suppressed),
    ):
        if n:
            metrics.RECIPIENTS.labels(outcome).inc(n)


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise ApiError(
            400,
            "invalid_header",
            f"must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
            "Idempotency-Key",
        )
    return key


async def ask_recorder(request: web.Request, store: StoreMessages) -> Message:
    """Send the store request and wait for the commit; 503 when the recorder cannot answer."""
    return await ask(request, "recorder", lambda corr_id: replace(store, corr_id=corr_id))


def topic_id_of(request: web.Request) -> str:
    topic_id = request.match_info["topic_id"]
    if len(topic_id) > MAX_TOPIC_CHARS:
        raise ApiError(400, "invalid_path", f"at most {MAX_TOPIC_CHARS} characters", "topic_id")
    if not conforms(NO_CONTROL_CHARACTERS, topic_id):
        raise ApiError(400, "invalid_path", "must not contain control characters", "topic_id")
    return topic_id


async def hold(request: web.Request, status: Status) -> TopicHeld:
    """Cancel or pause: the sender stops first, then the recorder holds the rest, exactly."""
    topic_id = topic_id_of(request)
    reply = await ask(request, "sender", lambda corr_id: HoldTopic(corr_id, "ingest", topic_id, status))
    assert isinstance(reply, TopicHeld)
    return reply


async def cancel_topic(request: web.Request) -> web.Response:
    """Cancel every recipient of the topic that has not been handed to SES.

    `{"status": "ok"}` as the original server answered, for an unknown topic too, with the
    exact count beside it.
    """
    reply = await hold(request, Status.CANCELLED)
    return web.json_response({"status": "ok", "topic_id": reply.topic_id, "cancelled": reply.count})


async def pause_topic(request: web.Request) -> web.Response:
    """Stop sending the topic, keeping its recipients for a resume."""
    reply = await hold(request, Status.PAUSED)
    if not reply.found:
        raise ApiError(404, "not_found", "no recipients were ever posted for this topic", "topic_id")
    return web.json_response({"topic_id": reply.topic_id, "paused": reply.count})


async def resume_topic(request: web.Request) -> web.Response:
    """Paused recipients go back to the queue, at their original due times."""
    topic_id = topic_id_of(request)
    reply = await ask(request, "recorder", lambda corr_id: ResumeTopic(corr_id, "ingest", topic_id))
    assert isinstance(reply, TopicResumed)
    if not reply.found:
        raise ApiError(404, "not_found", "no recipients were ever posted for this topic", "topic_id")
    if reply.count and reply.next_due_ms is not None:
        await wake_scheduler(request, reply.next_due_ms)
    return web.json_response({"topic_id": topic_id, "resumed": reply.count})


async def get_topic(request: web.Request) -> web.Response:
    """Totals by status for one topic; all zeros for an unknown one, as the original answered."""
    topic_id = topic_id_of(request)
    counts = await topic_counts(request.app[DB], topic_id)
    first, last = counts.pop("first_sent_at_ms"), counts.pop("last_sent_at_ms")
    return web.json_response(
        {
            "topic_id": topic_id,
            **counts,
            "first_sent_at": iso_ms(first),
            "last_sent_at": iso_ms(last),
            "paused_reason": await paused_reason(request.app[DB], topic_id, counts),
        }
    )


async def paused_reason(db: Reader, topic_id: str, counts: dict[str, Any]) -> str | None:
    """Why the topic is held by the reputation guard: the account's reason while it holds all
    sending and the topic has unsent work, else the topic's own (None: not held by the guard)."""
    if counts["pending"] + counts["sending"] + counts["paused"]:
        row = await db.fetchone("SELECT value FROM guard_state WHERE name = ?", (GUARD_ACCOUNT_REASON,))
        if row is not None:
            return str(row[0])
    if not counts["paused"]:
        return None
    row = await db.fetchone("SELECT paused_reason FROM topics WHERE topic_id = ?", (topic_id,))
    return None if row is None or row[0] is None else str(row[0])


def iso_ms(value: int | None) -> str | None:
    return None if value is None else iso_utc(datetime.fromtimestamp(value / 1000, UTC))


async def list_topics(request: web.Request) -> web.Response:
    """GET /v1/topics?limit=50&offset=0: topics with their totals, newest first."""
    limit, offset = whole_number(request, TOPICS_LIMIT), whole_number(request, TOPICS_OFFSET)
    topics = await recent_topics(request.app[DB], limit, offset)
    for topic in topics:
        topic["first_posted_at"] = iso_ms(topic.pop("first_posted_at_ms"))
        topic["last_posted_at"] = iso_ms(topic.pop("last_posted_at_ms"))
    return web.json_response({"topics": topics, "limit": limit, "offset": offset})
