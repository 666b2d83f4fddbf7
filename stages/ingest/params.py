"""Query parameters: ASCII whole numbers within a range, or a 400 naming the parameter.

`str.isdigit()` is not enough: it is true for "²", which `int()` refuses. Each range is
defined once here; the handlers enforce it and `openapi.py` documents it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from stages.ingest.errors import ApiError

ASCII_NUMBER: Final = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class WholeNumber:
    """A query parameter that is a whole number in [low, high], `default` when absent."""

    name: str
    default: int
    low: int
    high: int

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high, "default": self.default}


TOPICS_LIMIT: Final = WholeNumber("limit", 50, 1, 500)
TOPICS_OFFSET: Final = WholeNumber("offset", 0, 0, 1_000_000_000)  # more would overflow SQLite's integers
SUPPRESSIONS_LIMIT: Final = WholeNumber("limit", 100, 1, 1000)
HOURS: Final = WholeNumber("hours", 24, 1, 720)


def is_ascii_number(raw: str) -> bool:
    return ASCII_NUMBER.fullmatch(raw) is not None


def whole_number(request: web.Request, parameter: WholeNumber) -> int:
    raw = request.query.get(parameter.name)
    if raw is None:
        return parameter.default
    if not is_ascii_number(raw) or not parameter.low <= int(raw) <= parameter.high:
        message = f"{parameter.name} must be a whole number from {parameter.low} to {parameter.high}"
        raise ApiError(400, "invalid_query", message, parameter.name)
    return int(raw)
