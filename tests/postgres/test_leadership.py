"""One sender per database: the advisory lock goes to one node, and to a standby when that node is gone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from pipeline.db.leadership import SenderLock, sending_node

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 15.0


async def who_sends(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        return await sending_node(conn)
    finally:
        await conn.close()


async def test_one_node_holds_the_lock_and_everyone_can_see_which(pg_url: str) -> None:
    a, b = SenderLock(pg_url, "node-a", failover_s=0.5), SenderLock(pg_url, "node-b", failover_s=0.5)
    try:
        assert await who_sends(pg_url) is None
        assert await a.acquire()
        assert not await b.try_once()
        assert await a.still_held() and not await b.still_held()
        assert await who_sends(pg_url) == "node-a"
        await a.release()
        assert not await a.still_held()
        assert await asyncio.wait_for(b.acquire(), DEADLINE_S)
        assert await who_sends(pg_url) == "node-b"
    finally:
        await a.release()
        await b.release()


async def test_a_standby_takes_over_when_the_holder_is_killed(pg_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.postgres.holder", pg_url, "node-a"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    standby = SenderLock(pg_url, "node-b", failover_s=0.5)
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), DEADLINE_S) == "held\n"
        assert not await standby.try_once()
        assert await who_sends(pg_url) == "node-a"
        os.kill(holder.pid, signal.SIGKILL)
        assert await asyncio.wait_for(standby.acquire(), DEADLINE_S)
        assert await who_sends(pg_url) == "node-b"
    finally:
        holder.kill()
        holder.wait()
        await standby.release()


async def test_a_holder_whose_session_ends_knows_it_no_longer_holds(pg_url: str) -> None:
    holder, standby = SenderLock(pg_url, "node-a", failover_s=0.5), SenderLock(pg_url, "node-b", failover_s=0.5)
    admin = await asyncpg.connect(pg_url)
    try:
        assert await holder.acquire()
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ses-sender sender node-a'"
        )
        assert not await holder.still_held()
        assert await asyncio.wait_for(standby.acquire(), DEADLINE_S)
        assert not await holder.try_once()  # it reconnects, but the lock is taken
    finally:
        await admin.close()
        await holder.release()
        await standby.release()


async def test_acquire_gives_up_when_stopping(pg_url: str) -> None:
    a, b = SenderLock(pg_url, "node-a", failover_s=0.5), SenderLock(pg_url, "node-b", failover_s=0.5)
    stopping = asyncio.Event()
    try:
        assert await a.acquire()
        waiting = asyncio.create_task(b.acquire(stopping))
        await asyncio.sleep(0)
        stopping.set()
        assert await asyncio.wait_for(waiting, DEADLINE_S) is False
    finally:
        await a.release()
        await b.release()


async def test_an_unreachable_database_is_not_a_lock() -> None:
    lock = SenderLock("postgresql://postgres@127.0.0.1:1/none", "node-a", failover_s=0.5)
    assert not await lock.try_once()
    assert not await lock.still_held()
