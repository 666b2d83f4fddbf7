"""API authentication: a Bearer JWT (HS256, JWT_SECRET) or the X-API-KEY, on /v1/ routes.

The pixel and the SNS webhook are public: they verify what they receive in their own
ways. Nothing about a token or a secret is ever logged or echoed in an answer.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import jwt
from aiohttp import web

from config.settings import AuthSettings
from stages.ingest.app import CTX
from stages.ingest.errors import ApiError

PUBLIC = frozenset({"/v1/events/open", "/v1/events/results"})
CLIENT = "client"  # request key: who the caller is, for the rate limit
ALGORITHMS = ["HS256"]  # and nothing else: no `none`, no algorithm confusion

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="ses-sender"'})


def guarded(path: str) -> bool:
    """The API proper: everything under /v1/ but the pixel and the webhook."""
    return path.startswith("/v1/") and path not in PUBLIC


def check(request: web.Request, auth: AuthSettings) -> str:
    """Who the caller is (for the rate limit); 401 unless it has a valid API key or token."""
    key = request.headers.get("X-API-KEY")
    if key is not None and auth.api_key is not None:
        if hmac.compare_digest(key.encode(), auth.api_key.encode()):
            return "api-key"
        raise unauthorized("the API key is not valid")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("send Authorization: Bearer <token>")
    assert auth.jwt_secret is not None
    try:
        claims = jwt.decode(
            token.strip(),
            auth.jwt_secret,
            algorithms=ALGORITHMS,
            audience=auth.audience,
            issuer=auth.issuer,
            leeway=auth.leeway_s,
            options={"verify_aud": auth.audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise unauthorized("the token is not valid yet") from None
    except jwt.InvalidTokenError:
        raise unauthorized("the token is not valid") from None
    return f"sub:{claims.get('sub', '')}"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    auth = request.app[CTX].settings.auth
    if not auth.disabled and guarded(request.path):
        request[CLIENT] = check(request, auth)
    return await handler(request)
