"""How long the sender lock takes to reach a standby after its holder is killed with -9.

A real PostgreSQL (started as tests/postgres does), a holder in its own process, a standby
trying every FAILOVER_S / 5 in this one. Each round: the holder takes the lock, the standby
waits, the holder is killed; the time from the kill to the standby holding the lock is one
figure. This is the lock's share of a failover (the tree's share is measured once the
sender runs on PostgreSQL; docs/postgresql.md).

    python -m bench.failover [--kills 10] [--failover-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time

import asyncpg

from pipeline.db.leadership import SenderLock
from tests.helpers import ROOT
from tests.pg_server import NO_SERVER, PostgresServer, find_bindir


async def one_kill(url: str, failover_s: float) -> float:
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.postgres.holder", url, "holder"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    standby = SenderLock(url, "standby", failover_s)
    try:
        assert holder.stdout is not None
        if await asyncio.to_thread(holder.stdout.readline) != "held\n":
            raise RuntimeError("the holder did not take the lock")
        assert not await standby.try_once()
        waiting = asyncio.create_task(standby.acquire())
        # Kill at a random point of the standby's wait between tries, as a real crash would.
        await asyncio.sleep(failover_s / 5 * (0.1 + 0.8 * (time.monotonic_ns() % 1000) / 1000))
        killed = time.perf_counter()
        os.kill(holder.pid, signal.SIGKILL)
        await waiting
        return time.perf_counter() - killed
    finally:
        holder.kill()
        holder.wait()
        await standby.release()


async def main(kills: int, failover_s: float) -> int:
    bindir = find_bindir()
    if bindir is None:
        print(NO_SERVER)
        return 1
    server = PostgresServer(bindir).start()
    try:
        admin = await asyncpg.connect(server.url())
        await admin.execute("CREATE DATABASE failover")
        await admin.close()
        times = [await one_kill(server.url("failover"), failover_s) for _ in range(kills)]
    finally:
        server.stop()
    print(f"sender lock failover after kill -9, FAILOVER_S={failover_s:g}, {kills} kills:")
    p50, worst = statistics.median(times) * 1000, max(times) * 1000
    print(f"  p50 {p50:.0f} ms, max {worst:.0f} ms (budget {failover_s * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--failover-s", type=float, default=5.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.kills, args.failover_s)))
