"""One query text for both engines: SQLite's `?` placeholders, numbered for PostgreSQL.

Queries are written once, with `?`; `numbered` turns them into asyncpg's `$1, $2, …`
(once per text: the result is cached). A `?` inside a quoted literal or identifier is
left alone. Where the engines truly differ (SQLite's json_each, PostgreSQL's
ANY($1::bigint[])) the caller keeps two forms side by side.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """`?` placeholders as `$1`, `$2`, … in order, outside quotes."""
    out: list[str] = []
    quote: str | None = None
    count = 0
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            count += 1
            out.append(f"${count}")
            continue
        out.append(char)
    return "".join(out)
