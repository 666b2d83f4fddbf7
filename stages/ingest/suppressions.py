"""The suppression list: addresses that bounced for good, complained, or were added by hand.

Reads come from the read-only connection; changes go through the recorder.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from pipeline.messages import ChangeSuppression, SuppressionChanged
from stages.ingest.addresses import InvalidAddress, normalise
from stages.ingest.app import DB
from stages.ingest.campaigns import split_msgspec_error
from stages.ingest.errors import ApiError
from stages.ingest.talk import ask

PAGE_DEFAULT = 100
PAGE_MAX = 1000


class SuppressionIn(msgspec.Struct):
    email: str
    reason: str = "manual"


def row_to_json(row: Any) -> dict[str, Any]:
    return {"email": row[0], "reason": row[1], "detail": row[2], "created_at_ms": row[3]}


def address_of(request: web.Request) -> str:
    email = request.match_info["email"].strip().lower()
    if not email or len(email) > 320:
        raise ApiError(400, "invalid_path", "not an email address", "email")
    return email


async def list_suppressions(request: web.Request) -> web.Response:
    """GET /v1/suppressions?limit=100&after=<email>: in address order, paged by the last one."""
    raw_limit = request.query.get("limit", str(PAGE_DEFAULT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= PAGE_MAX:
        raise ApiError(400, "invalid_query", f"limit must be from 1 to {PAGE_MAX}", "limit")
    limit, after = int(raw_limit), request.query.get("after", "")
    async with request.app[DB].execute(
        "SELECT email, reason, detail, created_at_ms FROM suppressions WHERE email > ? ORDER BY email LIMIT ?",
        (after, limit + 1),
    ) as cursor:
        rows = list(await cursor.fetchall())
    items = [row_to_json(r) for r in rows[:limit]]
    following = items[-1]["email"] if len(rows) > limit else None
    return web.json_response({"suppressions": items, "next_after": following})


async def get_suppression(request: web.Request) -> web.Response:
    email = address_of(request)
    async with request.app[DB].execute(
        "SELECT email, reason, detail, created_at_ms FROM suppressions WHERE email = ?", (email,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise ApiError(404, "not_found", "this address is not suppressed", "email")
    return web.json_response(row_to_json(row))


async def delete_suppression(request: web.Request) -> web.Response:
    email = address_of(request)
    reply = await ask(request, "recorder", lambda c: ChangeSuppression(c, "ingest", email, None))
    assert isinstance(reply, SuppressionChanged)
    if not reply.changed:
        raise ApiError(404, "not_found", "this address is not suppressed", "email")
    return web.json_response({"email": email, "suppressed": False})


async def add_suppression(request: web.Request) -> web.Response:
    """POST /v1/suppressions {"email", "reason"?}: 201 when added, 200 when already there."""
    try:
        body = msgspec.json.decode(await request.read(), type=SuppressionIn)
    except msgspec.ValidationError as problem:
        message, field = split_msgspec_error(str(problem))
        raise ApiError(400, "invalid_field", message, field) from None
    except msgspec.DecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    try:
        email = normalise(body.email).lower()
    except InvalidAddress as problem:
        raise ApiError(400, "invalid_field", str(problem), "email") from None
    if not body.reason.strip() or len(body.reason) > 100:
        raise ApiError(400, "invalid_field", "1 to 100 characters", "reason")
    reply = await ask(request, "recorder", lambda c: ChangeSuppression(c, "ingest", email, body.reason))
    assert isinstance(reply, SuppressionChanged)
    return web.json_response({"email": email, "suppressed": True}, status=201 if reply.changed else 200)
