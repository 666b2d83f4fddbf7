"""One query text for both engines, and the few places where they truly differ.

Queries are written once, in SQLite's style with `?` placeholders; `numbered` turns them
into asyncpg's `$1, $2, …` (once per text: the result is cached). A `?` inside a quoted
literal or identifier is left alone. Where the engines differ, the helpers here give
each engine's form side by side: a list bound as one parameter (SQLite's json_each,
PostgreSQL's arrays) and how a writing transaction begins.

`Conn` is what the recorder's write functions take: a `sqlite3.Connection`, or
`pipeline.db.blocking_pg.BlockingPostgres`, which answers the same calls.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, Final, Protocol

import asyncpg

SQLITE: Final = "sqlite"
POSTGRESQL: Final = "postgresql"
# What a failed statement or commit raises, whichever engine (a refused write, a lost server).
STORE_ERRORS: Final = (
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
    TimeoutError,
)
# Of those, what says the input itself cannot be stored (PostgreSQL's class 22, "data exception":
# a NUL character, a number out of range), which a retry would not change.
UNSTORABLE: Final = (asyncpg.DataError,)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...
    def close(self) -> None: ...


def dialect(conn: Conn) -> str:
    return POSTGRESQL if getattr(conn, "dialect", SQLITE) == POSTGRESQL else SQLITE


def begin_writing(conn: Conn) -> None:
    """SQLite takes its write lock at once (IMMEDIATE), so a busy file fails here, not at COMMIT."""
    conn.execute("BEGIN IMMEDIATE" if dialect(conn) == SQLITE else "BEGIN")


def in_list(conn: Conn, values: Sequence[int | str], *, negate: bool = False) -> tuple[str, object]:
    """`IN` (or `NOT IN`) a list bound as one parameter: the SQL to follow a column, and the value."""
    if dialect(conn) == SQLITE:
        return ("NOT IN" if negate else "IN") + " (SELECT value FROM json_each(?))", json.dumps(list(values))
    kind = "text" if values and isinstance(values[0], str) else "bigint"
    return ("<> ALL" if negate else "= ANY") + f"(?::{kind}[])", list(values)


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
