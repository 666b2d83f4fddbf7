"""Scrub what Sentry is about to send: credentials, addresses and message bodies.

An error report is written by whoever triggered the error, and an unauthenticated request
can trigger one, so nothing in it may carry the JWT secret, the API key, a token, an address
or a body. The whole event is walked (every dict key and value, every list item) instead of
a list of known paths, so a field that a new SDK version or integration adds is scrubbed too.
Pure functions: `make_before_send(secrets)` is what `init_sentry` passes to `sentry_sdk.init`.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable
from typing import Any

FILTERED = "[Filtered]"
SECRET = "[secret]"
JWT = "[jwt]"
EMAIL = "[email]"
MARKUP = "[markup]"
# Shorter values would turn ordinary words into "[secret]"; settings insist on 32 or more.
MIN_SECRET_LENGTH = 8
# A value cut by the SDK's max_value_length can end in the first characters of a secret.
MIN_PARTIAL_SECRET = 4

# Key names whose whole value is a credential or a body, compared lowercased with "-" as "_".
SENSITIVE_KEY_PARTS = (
    "authorization",
    "cookie",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "token",
    "credential",
    "private_key",
    "session",
    "csrf",
    "signature",
)
# Under `request`, these are the body and the cookies: dropped whole, whatever they hold.
REQUEST_BODY_KEYS = frozenset({"data", "body", "cookies"})

# Every pattern starts only where a run of its characters starts (the lookbehinds), so an
# attacker's 100 kB string costs one pass, not one pass per character.
JWT_RE = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*+\.eyJ[A-Za-z0-9_-]*+\.[A-Za-z0-9_.=+/-]*+")
BEARER_RE = re.compile(r"\b(Bearer)(\s+)[^\s,;\"']++", re.IGNORECASE)
# Without "%", "=", "&", "/" and "?", so that in a query string "%40" and "=" end a local part.
_LOCAL = r"[\w.!#$'*+^`{|}~-]"
# Also the URL-encoded form (%40) that query strings carry.
EMAIL_RE = re.compile(rf"(?<!{_LOCAL}){_LOCAL}++(?:@|%40)[\w-]++(?:\.[\w-]++)+")
# Python's own names in frames and reprs look like tags; they are kept so grouping still works.
_PYTHON_NAMES = r"(?:module|lambda|listcomp|dictcomp|setcomp|genexpr|string|stdin|frozen [\w.]+)>"
_TAG = rf"(?:<![^<>]*>|<(?!{_PYTHON_NAMES})/?[A-Za-z][\w:.-]*+(?:\s[^<>]*+)?/?\s*>)"
# From the first tag to the last one, so the text between tags (the message itself) goes too.
MARKUP_RE = re.compile(rf"{_TAG}(?:.*{_TAG})?", re.DOTALL)

Event = dict[str, Any]
Hint = dict[str, Any]


class Scrubber:
    """Replaces the configured secrets, tokens, addresses and markup in every string."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        self.secrets = sorted(found, key=len, reverse=True)  # a secret inside another goes second

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, SECRET)
        value = self._cut_partial_secret(value)
        value = JWT_RE.sub(JWT, value)
        value = BEARER_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{FILTERED}", value)
        value = EMAIL_RE.sub(EMAIL, value)
        return MARKUP_RE.sub(MARKUP, value)

    def _cut_partial_secret(self, value: str) -> str:
        if not value.endswith("..."):  # how the SDK marks a value it cut at max_value_length
            return value
        body, ellipsis = value[:-3], "..."
        for secret in self.secrets:
            for size in range(min(len(secret) - 1, len(body)), MIN_PARTIAL_SECRET - 1, -1):
                if body.endswith(secret[:size]):
                    return body[:-size] + SECRET + ellipsis
        return value

    def value(self, value: Any, path: tuple[str, ...] = ()) -> Any:
        """`value` with every string in it scrubbed; containers are copied, not changed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            return self.text(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {self._key(k): self._item(str(k), v, path) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item, path) for item in value]
        if value is None or isinstance(value, bool | int | float | datetime.date):
            return value
        # Anything else would be repr()'d by the SDK later; do it now, scrubbed.
        return self.text(_safe_repr(value))

    def _key(self, key: Any) -> Any:
        return self.text(key) if isinstance(key, str) else key

    def _item(self, key: str, value: Any, path: tuple[str, ...]) -> Any:
        if value is None:
            return None
        name = key.lower().replace("-", "_")
        if any(part in name for part in SENSITIVE_KEY_PARTS):
            return FILTERED
        if "request" in path[-1:] and name in REQUEST_BODY_KEYS:
            return FILTERED
        return self.value(value, (*path, name))


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def make_before_send(secrets: Iterable[str | None]) -> Callable[[Event, Hint], Event | None]:
    """A `before_send` / `before_send_transaction` that scrubs the whole event."""
    scrubber = Scrubber(secrets)

    def before_send(event: Event, hint: Hint) -> Event | None:
        scrubbed: Event = scrubber.value(event)
        return scrubbed

    return before_send


def make_before_breadcrumb(secrets: Iterable[str | None]) -> Callable[[Event, Hint], Event | None]:
    """A `before_breadcrumb`: crumbs live in memory until an event carries them, so scrub early."""
    scrubber = Scrubber(secrets)

    def before_breadcrumb(crumb: Event, hint: Hint) -> Event | None:
        scrubbed: Event = scrubber.value(crumb)
        return scrubbed

    return before_breadcrumb
