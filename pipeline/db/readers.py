"""Reading from the API's event loop, from either engine, with one query text.

Ingest reads (topic statistics, suppressions, the pixel's and the links' lookups) and
never writes; the recorder alone writes. SQLite: one read-only aiosqlite connection (WAL
lets it read beside the writer). PostgreSQL: a small asyncpg pool, so a slow query does
not hold up the others. Rows come back as tuples from both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import aiosqlite
import asyncpg

from pipeline.db.dialect import numbered
from pipeline.db.schema import read_only_uri

POOL_SIZE: Final = 4


class Reader(Protocol):
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...


class SqliteReader:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.db.execute(sql, tuple(params)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        async with self.db.execute(sql, tuple(params)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else tuple(row)


class PostgresReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.pool.fetch(numbered(sql), *params)]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = await self.pool.fetchrow(numbered(sql), *params)
        return None if row is None else tuple(row)


@contextlib.asynccontextmanager
async def open_reader(database_path: Path, postgres_url: str | None) -> AsyncIterator[Reader]:
    """The reader for this node's store: PostgreSQL when DATABASE_URL names it, else the SQLite file."""
    if postgres_url is not None:
        pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=POOL_SIZE)
        try:
            yield PostgresReader(pool)
        finally:
            await pool.close()
        return
    async with aiosqlite.connect(read_only_uri(database_path), uri=True) as db:
        yield SqliteReader(db)
