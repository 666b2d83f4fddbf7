"""Query parameters: ASCII whole numbers within a range, or a 400 naming the parameter.

`str.isdigit()` is not enough: it is true for "²", which `int()` refuses.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from stages.ingest.errors import ApiError

ASCII_NUMBER: Final = re.compile(r"[0-9]{1,18}")


def is_ascii_number(raw: str) -> bool:
    return ASCII_NUMBER.fullmatch(raw) is not None


def whole_number(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not is_ascii_number(raw) or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_query", f"{name} must be a whole number from {low} to {high}", name)
    return int(raw)
