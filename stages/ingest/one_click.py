"""One-click unsubscribe (RFC 8058): the link in List-Unsubscribe and in the mail's body.

POST (a mail client's one-click, or the button on our page) unsubscribes at once and
answers 200, never a redirect; it needs no cookie and no auth, and its body is not
needed (the token names the recipient and the list). It goes through the sender like a
cancel (`HoldAddress`), so no unsent mail of that address in that scope reaches SES
after the answer. GET is a person or a link scanner: it shows a page with the button and
changes nothing. A forged token, or one whose recipient is gone, gets the 404 page and
changes nothing.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.messages import AddressHeld, HoldAddress, Refusal
from pipeline.unsubscribe import UnsubscribeTarget, parse
from stages.ingest.errors import ApiError
from stages.ingest.keys import CTX, DB, LINK_KEY
from stages.ingest.talk import ask
from stages.ingest.unsubscribe_pages import (
    CONTENT_SECURITY_POLICY,
    CONTENT_TYPE,
    confirm_page,
    done_page,
    not_found_page,
    unavailable_page,
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def page(html: str, status: int = 200, extra: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=html,
        status=status,
        content_type=CONTENT_TYPE.split(";")[0],
        charset="utf-8",
        headers={**HEADERS, **(extra or {})},
    )


async def recipient_of(request: web.Request) -> tuple[UnsubscribeTarget, str] | None:
    """Whom the link names, and their address; None for a forged link or a row that is gone."""
    target = parse(request.app[LINK_KEY], request.match_info["token"])
    if target is None:
        return None
    row = await request.app[DB].fetchone("SELECT email FROM recipients WHERE id = ?", (target.recipient_id,))
    return None if row is None else (target, str(row[0]))


async def unsubscribe_page(request: web.Request) -> web.Response:
    """GET (and HEAD): the confirmation page; nothing changes."""
    org = request.app[CTX].settings.lists.org_name
    found = await recipient_of(request)
    if found is None:
        return page(not_found_page(org), 404)
    return page(confirm_page(org, found[0].list_id))


async def one_click(request: web.Request) -> web.Response:
    """POST: unsubscribe now (idempotent), then the confirmation."""
    org = request.app[CTX].settings.lists.org_name
    found = await recipient_of(request)
    if found is None:
        return page(not_found_page(org), 404)
    target, email = found
    try:
        reply = await ask(
            request,
            "sender",
            lambda corr_id: HoldAddress(corr_id, "ingest", target.recipient_id, email, target.list_id),
        )
    except ApiError as problem:  # the sender or the recorder did not confirm: nothing is promised
        if problem.status != 503 or problem.code == Refusal.NOT_SENDING:  # another node sends: forward.py
            raise
        return page(unavailable_page(org), 503, {"Retry-After": "2"})
    if not isinstance(reply, AddressHeld):
        raise TypeError(f"the sender answered an unsubscribe with {type(reply).__name__}")
    if reply.new:
        request.app[CTX].log.info(
            "unsubscribed recipient %d from %s", target.recipient_id, target.list_id or "all mail"
        )
    return page(done_page(org, target.list_id))
