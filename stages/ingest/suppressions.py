"""The suppression list: addresses that bounced for good, complained, unsubscribed, or were
added by hand.

An entry has a scope: null is all mail (bounces, complaints, manual entries, an
unsubscribe from mail that named no list), else the list an unsubscribe named. Reads
come from the read-only connection; changes go through the recorder.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.messages import ChangeSuppression, SuppressionChanged
from stages.ingest.addresses import InvalidAddress, normalise
from stages.ingest.bodies import read_json_body
from stages.ingest.errors import ApiError
from stages.ingest.keys import DB
from stages.ingest.params import SUPPRESSIONS_LIMIT, whole_number
from stages.ingest.schemas import MAX_EMAIL_CHARS, NO_SPACE_OR_CONTROL, SuppressionIn, conforms, decode
from stages.ingest.talk import ask

MAX_BODY_BYTES = 16 * 1024


COLUMNS = "email, reason, detail, created_at_ms, scope"


def row_to_json(row: Any) -> dict[str, Any]:
    return {"email": row[0], "reason": row[1], "detail": row[2], "created_at_ms": row[3], "scope": row[4] or None}


def address_of(request: web.Request) -> str:
    """The address in the path, lower-cased as stored; 400 for what cannot be one."""
    email = request.match_info["email"]
    if len(email) > MAX_EMAIL_CHARS or not conforms(NO_SPACE_OR_CONTROL, email):
        raise ApiError(400, "invalid_path", "not an email address (spaces or control characters)", "email")
    return email.lower()


async def list_suppressions(request: web.Request) -> web.Response:
    """GET /v1/suppressions?limit=100&after=<email>: in address order, paged by the last one.

    `limit` counts addresses: an address with entries in several scopes has them all on one page.
    """
    limit, after = whole_number(request, SUPPRESSIONS_LIMIT), request.query.get("after", "")
    rows = await request.app[DB].fetchall(
        f"SELECT {COLUMNS} FROM suppressions WHERE email IN"
        " (SELECT DISTINCT email FROM suppressions WHERE email > ? ORDER BY email LIMIT ?) ORDER BY email, scope",
        (after, limit + 1),
    )
    emails = sorted({row[0] for row in rows})
    shown = set(emails[:limit])
    items = [row_to_json(r) for r in rows if r[0] in shown]
    following = emails[limit - 1] if len(emails) > limit else None
    return web.json_response({"suppressions": items, "next_after": following})


async def get_suppression(request: web.Request) -> web.Response:
    email = address_of(request)
    rows = await request.app[DB].fetchall(
        f"SELECT {COLUMNS} FROM suppressions WHERE email = ? ORDER BY scope", (email,)
    )
    if not rows:
        raise ApiError(404, "not_found", "this address is not suppressed", "email")
    # The all-mail entry when there is one (it sorts first), with every scope listed.
    return web.json_response({**row_to_json(rows[0]), "scopes": [row[4] or None for row in rows]})


async def delete_suppression(request: web.Request) -> web.Response:
    email = address_of(request)
    reply = await ask(request, "recorder", lambda c: ChangeSuppression(c, "ingest", email, None))
    assert isinstance(reply, SuppressionChanged)
    if not reply.changed:
        raise ApiError(404, "not_found", "this address is not suppressed", "email")
    return web.json_response({"email": email, "suppressed": False})


async def add_suppression(request: web.Request) -> web.Response:
    """POST /v1/suppressions {"email", "reason"?}: 201 when added, 200 when already there."""
    body = decode(await read_json_body(request, MAX_BODY_BYTES), SuppressionIn)
    try:
        email = normalise(body.email).lower()
    except InvalidAddress as problem:
        raise ApiError(400, "invalid_field", str(problem), "email") from None
    if not body.reason.strip():
        raise ApiError(400, "invalid_field", "must not be blank", "reason")
    reply = await ask(request, "recorder", lambda c: ChangeSuppression(c, "ingest", email, body.reason))
    assert isinstance(reply, SuppressionChanged)
    return web.json_response({"email": email, "suppressed": True}, status=201 if reply.changed else 200)
