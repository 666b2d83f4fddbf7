"""One error shape for every answer that is not a success.

`{"error": "<message>", "code": ..., "field"?: ...}` with the fitting status: the
original server's `{"error": "<message>"}`, which its typed clients parse, with our
machine-readable `code` and the `field` at fault beside it. aiohttp's own
errors (404, 405, 413) are rewritten into it; an unexpected exception becomes a 500
that says nothing about the code, the SQL or the data behind it.

This is a wrapper on each route (`answers_errors`) and a last, catch-all route
(`no_route`), not a middleware: aiohttp runs an app's middlewares on every route, and
the pixel, the busiest route, answers its image whatever happens and needs none. Two
coroutine layers per pixel were about 7 % of its throughput.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from pipeline.messages import Refused

log = logging.getLogger(__name__)

CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answer: raise it anywhere in a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def response(self) -> web.Response:
        error: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.field is not None:
            error["field"] = self.field
        return web.json_response(error, status=self.status, headers=self.headers)


def unavailable(message: str, retry_after_s: int = 2) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": str(retry_after_s)})


def refused(reply: Refused) -> ApiError:
    """The recorder's refusal as an answer: 503 with Retry-After when a retry may work, else 422."""
    if reply.reason.retry:
        return ApiError(503, reply.reason.value, reply.message, headers={"Retry-After": "2"})
    return ApiError(422, reply.reason.value, reply.message)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answers_errors(handler: Handler) -> Handler:
    """`handler` with every failure answered in the one error shape."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code = CODES_BY_STATUS.get(error.status, "error")
            message = error.reason if error.status != 413 else "the request body is too large"
            headers = {k: v for k, v in error.headers.items() if k.lower() in ("allow", "retry-after")}
            return ApiError(error.status, code, message, headers=headers).response()
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            return ApiError(500, "internal_error", "the server failed; the error was logged").response()

    return answer


NO_ROUTE: Final = "no-route"


async def no_route(request: web.Request) -> web.StreamResponse:
    """The catch-all route, registered last: 405 (with Allow) when another route has this
    path, else 404. Only unknown requests come here, so asking every route is cheap enough."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name != NO_ROUTE:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
