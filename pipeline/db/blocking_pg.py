"""asyncpg behind the calls the recorder makes on sqlite3: one writer, one batch at a time.

The recorder applies a batch synchronously (its writes are plain functions on one
connection, the same for both engines), so with PostgreSQL it drives asyncpg on an event
loop of its own, in a thread of its own, and waits for each statement. Statements are
prepared once per text and kept; a statement gives its rows as tuples and the number of
rows it changed, as a sqlite3 cursor does.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Final, TypeVar

import asyncpg

from pipeline.db.dialect import POSTGRESQL, numbered

T = TypeVar("T")
STATEMENTS_KEPT: Final = 512
CONTROL: Final = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
CONNECT_TIMEOUT_S: Final = 10.0


class Rows:
    """A statement's result: its rows and how many rows it changed (sqlite3's cursor calls)."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


def _heard(callback: Callable[[str], None]) -> Callable[[object, int, str, str], None]:
    def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return heard


def changed(status: str) -> int:
    """The row count at the end of a command tag: 'UPDATE 3', 'INSERT 0 1', 'SELECT 5'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class BlockingPostgres:
    """One asyncpg connection, called synchronously from the recorder's code."""

    dialect = POSTGRESQL

    def __init__(self, url: str, name: str = "ses-sender") -> None:
        self._url = url
        self._settings = {"application_name": name[:63]}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="postgres", daemon=True)
        self._thread.start()
        self._statements: OrderedDict[str, asyncpg.prepared_stmt.PreparedStatement] = OrderedDict()
        self._listeners: list[tuple[str, Callable[[str], None]]] = []
        self._in_unit = False  # between BEGIN and COMMIT/ROLLBACK: a lost session is never replaced there
        try:
            self.conn: asyncpg.Connection = self.run(self._connect())
        except BaseException:
            self._stop_loop()
            raise

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_S, server_settings=self._settings)
        for channel, callback in self._listeners:
            await conn.add_listener(channel, _heard(callback))
        return conn

    async def _reconnect_if_lost(self, sql: str) -> None:
        """A session that ended (the server restarted, the connection dropped) is replaced, but
        only where no unit of work was under way: a batch that lost its session fails whole."""
        if self.conn.is_closed() and (not self._in_unit or sql.upper().startswith("BEGIN")):
            self._statements.clear()
            self.conn = await self._connect()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on this connection's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def in_transaction(self) -> bool:
        return bool(self.conn.is_in_transaction())

    def execute(self, sql: str, parameters: Iterable[Any] = (), /) -> Rows:
        return self.run(self._execute(numbered(sql), tuple(parameters)))

    def executemany(self, sql: str, parameters: Iterable[Iterable[Any]], /) -> None:
        rows = [tuple(row) for row in parameters]
        if rows:
            self.run(self._executemany(numbered(sql), rows))

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._reconnect_if_lost(sql)
        await self.conn.executemany(sql, rows)

    async def _execute(self, sql: str, args: tuple[Any, ...]) -> Rows:
        await self._reconnect_if_lost(sql)
        if not args and sql.lstrip().upper().startswith(CONTROL):
            word = sql.lstrip().split(None, 1)[0].upper()
            if word == "BEGIN":
                self._in_unit = True
            elif word in ("COMMIT", "ROLLBACK") and not sql.upper().startswith("ROLLBACK TO"):
                self._in_unit = False
            return Rows([], changed(await self.conn.execute(sql)))
        statement = self._statements.get(sql)
        if statement is None:
            statement = await self.conn.prepare(sql)
            self._statements[sql] = statement
            if len(self._statements) > STATEMENTS_KEPT:
                self._statements.popitem(last=False)
        else:
            self._statements.move_to_end(sql)
        records = await statement.fetch(*args)
        return Rows([tuple(r) for r in records], changed(statement.get_statusmsg() or ""))

    def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call `callback(payload)` (on this connection's thread) for each NOTIFY on `channel`,
        on this session and on any that replaces it."""
        self._listeners.append((channel, callback))
        self.run(self.conn.add_listener(channel, _heard(callback)))

    def __enter__(self) -> BlockingPostgres:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if not self.conn.is_closed():
                self.run(asyncio.wait_for(self.conn.close(), CONNECT_TIMEOUT_S))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.conn.terminate()
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CONNECT_TIMEOUT_S)
        self._loop.close()
