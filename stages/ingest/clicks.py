"""The click redirect and the links of a topic.

`GET /v1/events/click/{token}` answers 302 to the link's own URL only when the token is
one this server signed, for a link it stored; anything else is a plain 404 page, so the
server is never an open redirect (the token names only the recipient and the link's
index: the URL comes from the database). The click is counted like an open: batched to
the recorder, which keeps the first time and the count per recipient and link.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from pipeline.clicks import parse_click
from pipeline.clock import now_ms
from stages.ingest.events import agent_of
from stages.ingest.keys import CTX, DB, LINK_KEY, OPENS
from stages.ingest.views import topic_id_of

# What a Location header may carry as it is (RFC 3986's reserved and unreserved characters, and %).
URL_SAFE = ":/?#[]@!$&'()*+,;=%-._~"
NOT_FOUND = "<!doctype html><title>Link not found</title><p>This link is not valid.</p>"


async def click(request: web.Request) -> web.StreamResponse:
    target = parse_click(request.app[LINK_KEY], request.match_info["token"])
    if target is None:
        return web.Response(text=NOT_FOUND, status=404, content_type="text/html")
    row = await request.app[DB].fetchone(
        "SELECT l.url FROM recipients r JOIN links l ON l.content_id = r.content_id AND l.link_index = ?"
        " WHERE r.id = ?",
        (target.link_index, target.recipient_id),
    )
    if row is None:
        return web.Response(text=NOT_FOUND, status=404, content_type="text/html")
    if request.method == "GET":
        try:
            request.app[OPENS].add_click(target.recipient_id, target.link_index, now_ms(), agent_of(request))
        except Exception:  # the reader must get where the link goes whatever happens
            request.app[CTX].log.exception("could not record a click")
    return web.Response(
        status=302, headers={"Location": quote(str(row[0]), safe=URL_SAFE), "Cache-Control": "no-store"}
    )


async def topic_links(request: web.Request) -> web.Response:
    """GET /v1/topics/{topic_id}/links: each tracked link with unique and total clicks."""
    topic_id = topic_id_of(request)
    rows = await request.app[DB].fetchall(
        "SELECT l.url, COUNT(DISTINCT c.recipient_id), CAST(SUM(c.count) AS BIGINT) FROM clicks c"
        " JOIN recipients r ON r.id = c.recipient_id"
        " JOIN links l ON l.content_id = r.content_id AND l.link_index = c.link_index"
        " WHERE r.topic_id = ? GROUP BY l.url ORDER BY 3 DESC, 1",
        (topic_id,),
    )
    links: list[dict[str, Any]] = [{"url": url, "clicked": unique, "clicks": total} for url, unique, total in rows]
    return web.json_response({"topic_id": topic_id, "links": links})
