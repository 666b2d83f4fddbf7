"""API authentication: a Bearer JWT (HS256, JWT_SECRET) or the X-API-KEY, on /v1/ routes.

`routes.py` wraps every API handler in `protected`; the pixel and the SNS webhook are
public (they verify what they receive in their own ways) and pay nothing for it, which
matters for the pixel. Nothing about a token or a secret is ever logged or echoed.
"""

from __future__ import annotations

import functools
import hmac
from typing import Final

import jwt
from aiohttp import web

from config.settings import AuthSettings
from stages.ingest.errors import ApiError, Handler
from stages.ingest.keys import CTX, LIMITER
from stages.ingest.ratelimit import enforce

ALGORITHMS = ["HS256"]  # and nothing else: no `none`, no algorithm confusion


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="ses-sender"'})


def check(request: web.Request, auth: AuthSettings) -> str:
    """Who the caller is (for the rate limit and Idempotency-Key scopes); 401 unless it has a
    valid API key or token. A malformed credential is a 401 like any other, never an error."""
    key = request.headers.get("X-API-KEY")
    if key is not None and auth.api_key is not None:
        if not key.strip():
            raise unauthorized("Empty API Key")
        if key.isascii() and hmac.compare_digest(key.encode(), auth.api_key.encode()):
            return "api-key"
        raise unauthorized("Invalid API Key")
    if auth.jwt_secret is None:
        raise unauthorized("Missing X-API-KEY header")
    return token_subject(request.headers.get("Authorization", ""), auth, auth.jwt_secret)


def token_subject(header: str, auth: AuthSettings, secret: str) -> str:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("send Authorization: Bearer <token> or X-API-KEY")
    if not token.isascii():  # PyJWT raises on bytes it cannot encode; a JWT is ASCII anyway
        raise unauthorized("the token is not valid")
    required = ["exp"] if auth.require_exp else []
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            audience=auth.audience,
            issuer=auth.issuer,
            leeway=auth.leeway_s,
            options={"verify_aud": auth.audience is not None, "require": required},
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise unauthorized("the token is not valid yet") from None
    except jwt.MissingRequiredClaimError:
        raise unauthorized("the token has no expiry (exp); mint one with an expiry") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise unauthorized("the token is not valid") from None
    subject = claims.get("sub", "")
    return f"sub:{subject if isinstance(subject, str) else ''}"


CLIENT: Final = web.RequestKey("client", str)


def protected(handler: Handler) -> Handler:
    """`handler` behind authentication (401) and the per-client rate limit (429)."""

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        settings = request.app[CTX].settings
        client = (request.remote or "unknown") if settings.auth.disabled else check(request, settings.auth)
        limiter = request.app[LIMITER]
        if limiter is not None:
            enforce(limiter, client)
        # Who the caller is, for scoping what it may see again (Idempotency-Key answers).
        request[CLIENT] = "open" if settings.auth.disabled else client
        return await handler(request)

    return guard
