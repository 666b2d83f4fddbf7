"""One active sender per database: the node whose session holds an advisory lock sends.

SES's rate is per account, so with several nodes on one PostgreSQL only one of them may
send. The lock is session-level and lives on a connection of its own: PostgreSQL
releases it the moment that session ends (the process was killed, its connection
closed), so a standby that tries for it every `failover_s / 5` takes over within one
try. A holder that cannot show its session is alive within `failover_s / 5` must act as
if it has lost the lock, because it may have: it stops sending at once.

Who holds the lock is read from PostgreSQL itself (`pg_locks` and the holder's
application_name), so any node can say which node sends without a heartbeat table.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import asyncpg

from pipeline.db.dialect import numbered

SENDER_LOCK: Final = 0x5E5_0002  # below 2**32: pg_locks shows it as classid 0, objid SENDER_LOCK
APPLICATION_PREFIX: Final = "ses-sender sender "
TRIES_PER_FAILOVER: Final = 5
# A peer that vanishes without closing (a dead host) is noticed by the server's keepalives.
KEEPALIVES: Final = {"tcp_keepalives_idle": "2", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "2"}
# What a lost session raises (asyncpg's internal error included: a terminated session's next query).
LOST: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


class SenderLock:
    """This node's claim to be the one sender: `acquire`, then `still_held` until it is not."""

    def __init__(self, url: str, node: str, failover_s: float = 5.0) -> None:
        self.url = url
        self.node = node
        self.failover_s = failover_s
        self.every_s = failover_s / TRIES_PER_FAILOVER
        self.conn: asyncpg.Connection | None = None

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.url,
            timeout=self.every_s * 2,
            server_settings={"application_name": APPLICATION_PREFIX + self.node, **KEEPALIVES},
        )

    async def try_once(self) -> bool:
        """One try: True if this node now holds the lock (or already did)."""
        try:
            if self.conn is None or self.conn.is_closed():
                self.conn = await self._connect()
            got: bool = await asyncio.wait_for(
                self.conn.fetchval("SELECT pg_try_advisory_lock($1)", SENDER_LOCK), self.every_s * 2
            )
        except LOST:
            await self._drop()
            return False
        return got

    async def acquire(self, stopping: asyncio.Event | None = None) -> bool:
        """Try every `failover_s / 5` until this node holds the lock (True) or `stopping` is set (False)."""
        stopping = stopping or asyncio.Event()
        while not stopping.is_set():
            if await self.try_once():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.every_s)
        return False

    async def still_held(self) -> bool:
        """Whether this node's session (and so its lock) is alive, answered within `failover_s / 5`."""
        if self.conn is None or self.conn.is_closed():
            return False
        try:
            held: bool = await asyncio.wait_for(
                self.conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                    " AND classid = 0 AND objid = $1 AND granted)",
                    SENDER_LOCK,
                ),
                self.every_s,
            )
        except LOST:
            await self._drop()
            return False
        return held

    async def release(self) -> None:
        """Give the lock up (a graceful stop): closing the session releases it at once."""
        await self._drop()

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), self.every_s)
            except LOST:
                conn.terminate()


# The holder's application_name, as `?` text for pipeline.db.readers (bound: SENDER_LOCK).
SENDING_NODE_QUERY: Final = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = ? AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def node_of(application_name: str | None) -> str | None:
    return None if application_name is None else application_name.removeprefix(APPLICATION_PREFIX)


async def sending_node(conn: asyncpg.Connection) -> str | None:
    """The node that holds the sender lock in this database, or None if no node does."""
    return node_of(await conn.fetchval(numbered(SENDING_NODE_QUERY), SENDER_LOCK))
