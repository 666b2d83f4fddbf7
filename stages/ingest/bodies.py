"""Reading request bodies: the media type first (415), then a size cap per route (413) and a time limit (408)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from stages.ingest.errors import ApiError
from stages.ingest.keys import CTX

JSON_TYPES = ("application/json",)


def check_json_type(request: web.Request) -> None:
    """JSON routes take application/json (or any +json type), and nothing else.

    A body without a Content-Type is refused too, as the original server did: a web page
    can POST such a body to a developer's localhost without a CORS preflight.
    """
    if "Content-Type" not in request.headers:
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json", "Content-Type")
    media = request.content_type.lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as Content-Type: application/json (got {media!r})",
            "Content-Type",
        )


async def read_capped(request: web.Request, limit: int, what: str = "the body") -> bytes:
    """The whole body, refusing (413) as soon as it is known to pass `limit` bytes, and (408)
    when it has not all arrived within HTTP_BODY_TIMEOUT_S."""
    too_large = ApiError(413, "body_too_large", f"{what} is at most {describe_bytes(limit)}")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    timeout_s = request.app[CTX].settings.http_body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"{what} did not arrive within {timeout_s:g} s (HTTP_BODY_TIMEOUT_S)"
        ) from None
    return b"".join(chunks)


async def read_json_body(request: web.Request, limit: int) -> bytes:
    check_json_type(request)
    return await read_capped(request, limit)


def describe_bytes(count: int) -> str:
    if count >= 1 << 20 and count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count >= 1 << 10 and count % (1 << 10) == 0:
        return f"{count >> 10} KiB"
    return f"{count} bytes"
