"""API authentication: a Bearer JWT (HS256, JWT_SECRET) or the X-API-KEY, on /v1/ routes.

`routes.py` wraps every API handler in `protected`; the pixel and the SNS webhook are
public (they verify what they receive in their own ways) and pay nothing for it, which
matters for the pixel. Nothing about a token or a secret is ever logged or echoed.
"""

from __future__ import annotations

import functools
import hmac

import jwt
from aiohttp import web

from config.settings import AuthSettings
from stages.ingest.app import CTX, LIMITER
from stages.ingest.errors import ApiError, Handler
from stages.ingest.ratelimit import enforce

ALGORITHMS = ["HS256"]  # and nothing else: no `none`, no algorithm confusion


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="ses-sender"'})


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


def protected(handler: Handler) -> Handler:
    """`handler` behind authentication (401) and the per-client rate limit (429)."""

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        settings = request.app[CTX].settings
        client = (request.remote or "unknown") if settings.auth.disabled else check(request, settings.auth)
        limiter = request.app[LIMITER]
        if limiter is not None:
            enforce(limiter, client)
        return await handler(request)

    return guard
