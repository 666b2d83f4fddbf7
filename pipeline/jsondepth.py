"""How deeply JSON nests, decided by us rather than by the interpreter.

Python's and msgspec's recursion limits differ by version (3.12 moved to C-stack limits:
5,000 nested arrays fail on 3.11 and parse on 3.13), so the same body would get
different answers on different interpreters. Every JSON we read from outside goes
through `check_depth` first: deeper than MAX_DEPTH is refused the same way everywhere.
"""

from __future__ import annotations

import re
from typing import Final

# Far deeper than anything we accept needs, far below every interpreter's limit.
MAX_DEPTH: Final = 64
STRINGS: Final = re.compile(rb'"[^"]*"')
INNERMOST_PAIR: Final = re.compile(rb"\[\]|\{\}")
NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')


class TooDeep(ValueError):
    """The JSON nests deeper than MAX_DEPTH."""


def too_deep(body: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """True when arrays and objects nest more than `limit` levels.

    Cheap when it can be: a body with at most `limit` opening brackets cannot be too deep.
    Otherwise only brackets and the quotes that delimit strings are kept (escaped
    backslashes and quotes go first), what the strings held is cut out, and innermost
    pairs are removed one level a round; malformed JSON is left for the decoder to name.
    """
    data = body.encode(errors="surrogatepass") if isinstance(body, str) else body
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Most strings hold no brackets and become `""`; dropping those first leaves little to scan.
    skeleton = STRINGS.sub(b"", unescaped.translate(None, NOT_STRUCTURE).replace(b'""', b""))
    for _ in range(limit):
        shorter = INNERMOST_PAIR.sub(b"", skeleton)
        if not shorter:
            return False
        if len(shorter) == len(skeleton):
            return False  # unbalanced: not JSON, which the decoder says better
        skeleton = shorter
    return True


def check_depth(body: bytes | str, limit: int = MAX_DEPTH) -> None:
    if too_deep(body, limit):
        raise TooDeep(f"the JSON is nested more than {limit} levels deep")
